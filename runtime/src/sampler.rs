//! Choosing the next token from logits: greedy, or sampling with
//! temperature, top-k and top-p, seeded and reproducible.
//!
//! The warpers apply in Hugging Face's order (temperature, then top-k, then
//! top-p), so a seedless comparison of which tokens *can* be drawn matches
//! `transformers`' `generate(do_sample=True, ...)`.

/// How to pick tokens.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplingConfig {
    /// 0 (or below) means greedy: always the most likely token.
    pub temperature: f32,
    /// Keep only the `k` most likely tokens (`None`: all).
    pub top_k: Option<usize>,
    /// Keep the smallest set of most likely tokens whose probability reaches
    /// `p` (`None` or ≥ 1: all).
    pub top_p: Option<f32>,
    pub seed: u64,
}

impl Default for SamplingConfig {
    /// Greedy.
    fn default() -> Self {
        SamplingConfig {
            temperature: 0.0,
            top_k: None,
            top_p: None,
            seed: 0,
        }
    }
}

/// Invalid sampling settings.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SamplingError {
    #[error("temperature must be finite, got {0}")]
    Temperature(f32),
    #[error("top-k must be at least 1")]
    TopK,
    #[error("top-p must be in (0, 1], got {0}")]
    TopP(f32),
    #[error("the logits are empty")]
    Empty,
    #[error("the logits contain NaN at index {0}")]
    NaN(usize),
}

impl SamplingConfig {
    pub fn greedy() -> Self {
        SamplingConfig::default()
    }

    pub fn validate(&self) -> Result<(), SamplingError> {
        if !self.temperature.is_finite() {
            return Err(SamplingError::Temperature(self.temperature));
        }
        if self.top_k == Some(0) {
            return Err(SamplingError::TopK);
        }
        if let Some(p) = self.top_p {
            if !(p > 0.0 && p <= 1.0) {
                return Err(SamplingError::TopP(p));
            }
        }
        Ok(())
    }

    pub fn is_greedy(&self) -> bool {
        self.temperature <= 0.0
    }
}

/// xoshiro256** seeded through SplitMix64: small, fast, reproducible across
/// platforms (the runtime keeps its dependencies few).
#[derive(Clone, Debug)]
struct Rng {
    s: [u64; 4],
}

impl Rng {
    fn new(seed: u64) -> Rng {
        let mut z = seed;
        let mut next = || {
            z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut x = z;
            x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            x ^ (x >> 31)
        };
        Rng {
            s: [next(), next(), next(), next()],
        }
    }

    fn next_u64(&mut self) -> u64 {
        let r = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        r
    }

    /// Uniform in [0, 1).
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// Picks tokens according to a [`SamplingConfig`].
#[derive(Clone, Debug)]
pub struct Sampler {
    cfg: SamplingConfig,
    rng: Rng,
    // Scratch reused across calls: (logit, token) pairs.
    scratch: Vec<(f32, u32)>,
}

impl Sampler {
    pub fn new(cfg: SamplingConfig) -> Result<Sampler, SamplingError> {
        cfg.validate()?;
        Ok(Sampler {
            rng: Rng::new(cfg.seed),
            cfg,
            scratch: Vec::new(),
        })
    }

    pub fn config(&self) -> &SamplingConfig {
        &self.cfg
    }

    /// The next token for one row of logits.
    pub fn sample(&mut self, logits: &[f32]) -> Result<u32, SamplingError> {
        if logits.is_empty() {
            return Err(SamplingError::Empty);
        }
        if let Some(i) = logits.iter().position(|x| x.is_nan()) {
            return Err(SamplingError::NaN(i));
        }
        if self.cfg.is_greedy() {
            return Ok(argmax(logits));
        }
        let t = self.cfg.temperature;
        let c = &mut self.scratch;
        c.clear();
        c.extend(logits.iter().enumerate().map(|(i, &x)| (x / t, i as u32)));
        // Most likely first; ties broken by the lower token id (deterministic).
        c.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        if let Some(k) = self.cfg.top_k {
            c.truncate(k.max(1));
        }
        let max = c[0].0 as f64;
        let mut probs: Vec<f64> = c.iter().map(|&(x, _)| (x as f64 - max).exp()).collect();
        let total: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= total);
        if let Some(p) = self.cfg.top_p.filter(|&p| p < 1.0) {
            // Keep tokens until the mass reaches p (at least one).
            let mut mass = 0.0;
            let mut keep = probs.len();
            for (i, q) in probs.iter().enumerate() {
                mass += q;
                if mass >= p as f64 {
                    keep = i + 1;
                    break;
                }
            }
            probs.truncate(keep);
            let total: f64 = probs.iter().sum();
            probs.iter_mut().for_each(|q| *q /= total);
        }
        let u = self.rng.next_f64();
        let mut acc = 0.0;
        for (i, q) in probs.iter().enumerate() {
            acc += q;
            if u < acc {
                return Ok(c[i].1);
            }
        }
        Ok(c[probs.len() - 1].1)
    }
}

/// Index of the largest value; the first one on ties (as `torch.argmax`).
pub fn argmax(xs: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in xs.iter().enumerate() {
        if x > xs[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(t: f32, k: Option<usize>, p: Option<f32>, seed: u64) -> SamplingConfig {
        SamplingConfig {
            temperature: t,
            top_k: k,
            top_p: p,
            seed,
        }
    }

    #[test]
    fn greedy_takes_the_first_maximum() {
        let mut s = Sampler::new(SamplingConfig::greedy()).unwrap();
        assert_eq!(s.sample(&[0.1, 3.0, 3.0, -1.0]).unwrap(), 1);
    }

    #[test]
    fn same_seed_same_tokens_other_seed_other_tokens() {
        let logits: Vec<f32> = (0..50).map(|i| (i as f32 * 0.37).sin()).collect();
        let draw = |seed| {
            let mut s = Sampler::new(cfg(1.0, None, None, seed)).unwrap();
            (0..64)
                .map(|_| s.sample(&logits).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
    }

    #[test]
    fn top_k_and_top_p_restrict_the_support() {
        let logits = [5.0, 4.0, 3.0, 0.0, -1.0, -2.0];
        let mut s = Sampler::new(cfg(1.0, Some(2), None, 1)).unwrap();
        for _ in 0..500 {
            assert!(s.sample(&logits).unwrap() < 2);
        }
        // p(0) ≈ 0.66, p(0)+p(1) ≈ 0.90: top-p 0.8 keeps exactly tokens 0 and 1.
        let mut s = Sampler::new(cfg(1.0, None, Some(0.8), 2)).unwrap();
        let mut seen = [0usize; 6];
        for _ in 0..2000 {
            seen[s.sample(&logits).unwrap() as usize] += 1;
        }
        assert!(
            seen[0] > 0 && seen[1] > 0 && seen[2..].iter().all(|&n| n == 0),
            "{seen:?}"
        );
    }

    #[test]
    fn frequencies_follow_the_softmax() {
        let logits = [1.0f32, 0.0, -1.0];
        let z: f64 = logits.iter().map(|&x| (x as f64 / 0.7).exp()).sum();
        let want: Vec<f64> = logits.iter().map(|&x| (x as f64 / 0.7).exp() / z).collect();
        let mut s = Sampler::new(cfg(0.7, None, None, 3)).unwrap();
        let n = 40_000;
        let mut seen = [0f64; 3];
        for _ in 0..n {
            seen[s.sample(&logits).unwrap() as usize] += 1.0;
        }
        for i in 0..3 {
            assert!(
                (seen[i] / n as f64 - want[i]).abs() < 0.01,
                "{seen:?} vs {want:?}"
            );
        }
    }

    #[test]
    fn bad_settings_and_logits_are_errors() {
        assert!(Sampler::new(cfg(f32::NAN, None, None, 0)).is_err());
        assert!(Sampler::new(cfg(1.0, Some(0), None, 0)).is_err());
        assert!(Sampler::new(cfg(1.0, None, Some(0.0), 0)).is_err());
        assert!(Sampler::new(cfg(1.0, None, Some(1.5), 0)).is_err());
        let mut s = Sampler::new(cfg(1.0, None, None, 0)).unwrap();
        assert_eq!(s.sample(&[]), Err(SamplingError::Empty));
        assert_eq!(s.sample(&[0.0, f32::NAN]), Err(SamplingError::NaN(1)));
    }
}

/// The sampling flags of `kiln generate`, `kiln run` and `kiln-run`: each
/// given flag overrides the model's defaults.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct SamplingFlags {
    /// 0 = greedy. Default: the model's (its generation_config.json; greedy without one).
    #[arg(long)]
    pub temperature: Option<f32>,
    #[arg(long)]
    pub top_k: Option<usize>,
    #[arg(long)]
    pub top_p: Option<f32>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

impl SamplingFlags {
    /// `defaults` with the given flags applied, and the seed.
    pub fn over(&self, defaults: &SamplingConfig) -> SamplingConfig {
        SamplingConfig {
            temperature: self.temperature.unwrap_or(defaults.temperature),
            top_k: self.top_k.or(defaults.top_k),
            top_p: self.top_p.or(defaults.top_p),
            seed: self.seed,
        }
    }
}
