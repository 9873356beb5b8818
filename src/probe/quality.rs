//! Estimated voice quality: the ITU-T G.107 E-model, reduced to what a probe can measure.
//!
//! The rule this module enforces: the score is a pure function of packet loss and delay, with
//! every constant named here. The call is assumed to be G.711 with packet loss concealment
//! (Ie = 0, Bpl = 25.1, random loss: BurstR = 1) and every other G.107 input at its default, so
//! R = 93.2 − Id − Ie,eff. Id uses the simplified delay formula
//! Id = 0.024·d + 0.11·(d − 177.3)·H(d − 177.3), where d is the one-way delay plus a
//! jitter-buffer allowance of twice the measured jitter. MOS follows from R by the G.107 mapping
//! MOS = 1 + 0.035·R + 7·10⁻⁶·R·(R − 60)·(100 − R), clamped to 1..4.5.

/// R with every G.107 input at its default and no delay or loss (Ro − Is).
pub const R_DEFAULT: f64 = 93.2;
/// Equipment impairment of G.711.
pub const IE_G711: f64 = 0.0;
/// Packet-loss robustness of G.711 with packet loss concealment (G.113 Appendix I).
pub const BPL_G711_PLC: f64 = 25.1;
/// Burst ratio: 1 for random loss.
pub const BURST_R: f64 = 1.0;
/// The delay (ms) beyond which the delay impairment grows steeply.
pub const ID_KNEE_MS: f64 = 177.3;
/// The jitter buffer is assumed to add this many times the measured jitter to the delay.
pub const JITTER_BUFFER_FACTOR: f64 = 2.0;

/// An estimate and the inputs it was computed from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Quality {
    /// R-factor, 0..100 (above 90 is "best", below 50 "not recommended").
    pub r: f64,
    /// Mean opinion score, 1..4.5.
    pub mos: f64,
    /// Packet loss that went into the estimate, percent.
    pub loss_pct: f64,
    /// The delay d that went into Id, ms (one-way delay + jitter-buffer allowance).
    pub delay_ms: f64,
}

/// Estimates call quality from the loss fraction (0..1), the one-way delay and the jitter (ms).
/// An unknown one-way delay counts as 0, so the estimate is then an upper bound.
pub fn estimate(loss_fraction: f64, one_way_delay_ms: Option<f64>, jitter_ms: f64) -> Quality {
    let loss_pct = (loss_fraction * 100.0).clamp(0.0, 100.0);
    let delay_ms =
        one_way_delay_ms.unwrap_or(0.0).max(0.0) + JITTER_BUFFER_FACTOR * jitter_ms.max(0.0);
    let r = r_factor(loss_pct, delay_ms);
    Quality {
        r,
        mos: mos_from_r(r),
        loss_pct,
        delay_ms,
    }
}

/// R = 93.2 − Id(d) − Ie,eff(loss), clamped to 0..100.
pub fn r_factor(loss_pct: f64, delay_ms: f64) -> f64 {
    let r = R_DEFAULT - delay_impairment(delay_ms) - effective_equipment_impairment(loss_pct);
    if r.is_nan() {
        0.0
    } else {
        r.clamp(0.0, 100.0)
    }
}

/// Id = 0.024·d + 0.11·(d − 177.3)·H(d − 177.3).
pub fn delay_impairment(delay_ms: f64) -> f64 {
    let d = delay_ms.max(0.0);
    let beyond_knee = if d > ID_KNEE_MS {
        0.11 * (d - ID_KNEE_MS)
    } else {
        0.0
    };
    0.024 * d + beyond_knee
}

/// Ie,eff = Ie + (95 − Ie) · Ppl / (Ppl / BurstR + Bpl), with Ppl in percent.
pub fn effective_equipment_impairment(loss_pct: f64) -> f64 {
    let ppl = loss_pct.clamp(0.0, 100.0);
    IE_G711 + (95.0 - IE_G711) * ppl / (ppl / BURST_R + BPL_G711_PLC)
}

/// MOS = 1 + 0.035·R + 7·10⁻⁶·R·(R − 60)·(100 − R), 1 below R = 0 and 4.5 above R = 100.
pub fn mos_from_r(r: f64) -> f64 {
    if r.is_nan() || r <= 0.0 {
        return 1.0;
    }
    if r >= 100.0 {
        return 4.5;
    }
    let mos = 1.0 + 0.035 * r + 7e-6 * r * (r - 60.0) * (100.0 - r);
    mos.clamp(1.0, 4.5)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_call_with_20_ms_delay_is_excellent() {
        let q = estimate(0.0, Some(20.0), 0.0);
        assert!((q.r - (93.2 - 0.48)).abs() < 1e-9, "R = {}", q.r);
        assert!(q.mos > 4.3, "MOS = {}", q.mos);
    }

    #[test]
    fn ten_percent_loss_is_noticeably_worse() {
        let clean = estimate(0.0, Some(20.0), 0.0);
        let lossy = estimate(0.10, Some(20.0), 0.0);
        // Ie,eff = 95 · 10 / 35.1 ≈ 27.07.
        assert!((lossy.r - (93.2 - 0.48 - 95.0 * 10.0 / 35.1)).abs() < 1e-9);
        assert!(
            lossy.mos < clean.mos - 0.8,
            "{} vs {}",
            lossy.mos,
            clean.mos
        );
        assert!(lossy.mos > 3.0 && lossy.mos < 3.6, "MOS = {}", lossy.mos);
    }

    #[test]
    fn quality_falls_monotonically_with_loss_and_delay() {
        let mut last = estimate(0.0, Some(20.0), 1.0);
        for i in 1..=100 {
            let q = estimate(f64::from(i) / 100.0, Some(20.0), 1.0);
            assert!(q.r < last.r, "R must fall as loss rises ({i} %)");
            assert!(q.mos <= last.mos, "MOS must not rise with loss ({i} %)");
            last = q;
        }
        let mut last = estimate(0.01, Some(0.0), 0.0);
        for d in (10..=600).step_by(10) {
            let q = estimate(0.01, Some(f64::from(d)), 0.0);
            assert!(q.r < last.r && q.mos <= last.mos, "delay {d} ms");
            last = q;
        }
    }

    #[test]
    fn delay_knee_and_jitter_allowance() {
        assert!((delay_impairment(177.3) - 0.024 * 177.3).abs() < 1e-9);
        assert!((delay_impairment(277.3) - (0.024 * 277.3 + 11.0)).abs() < 1e-9);
        let q = estimate(0.0, Some(100.0), 15.0);
        assert!((q.delay_ms - 130.0).abs() < 1e-9);
        let unknown = estimate(0.0, None, 5.0);
        assert!((unknown.delay_ms - 10.0).abs() < 1e-9);
    }

    #[test]
    fn mos_mapping_is_clamped() {
        assert_eq!(mos_from_r(-5.0), 1.0);
        assert_eq!(mos_from_r(0.0), 1.0);
        assert_eq!(mos_from_r(120.0), 4.5);
        assert!((mos_from_r(93.2) - 4.41).abs() < 0.01);
        assert!((mos_from_r(50.0) - 2.58).abs() < 0.01);
        let total_loss = estimate(1.0, Some(1000.0), 100.0);
        assert_eq!((total_loss.r, total_loss.mos), (0.0, 1.0));
    }
}
