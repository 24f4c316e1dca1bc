//! TResNet variants as data: depth, width, v2 and the head, by name or built by hand.

/// The smallest input side: every stage's blur needs at least 2 pixels to reflect-pad.
pub const MIN_INPUT_SIDE: usize = 20;

/// Output channels of a Bottleneck block per planes of its stage.
pub(crate) const EXPANSION: usize = 4;

/// The classifier on top of the pooled features.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadKind {
    /// `head.fc`: one linear layer (timm and every ASL model but OpenImages).
    Linear,
    /// The ASL OpenImages model's head: `head.fc.embedding_generator.0` (features -> `embedding`)
    /// then `head.fc.FC` (embedding -> classes), no activation between them.
    Bottleneck { embedding: usize },
}

/// A TResNet variant: depth and width are data, so small test and demo models are configs too.
#[derive(Clone, Debug, PartialEq)]
pub struct TResNetConfig {
    /// Blocks in each of the four stages.
    pub layers: [usize; 4],
    /// Base width multiplier: stem width `P = int(64 * width_factor)`.
    pub width_factor: f64,
    /// TResNet v2: Bottleneck blocks in all stages, `P` rounded down to a multiple of 8.
    pub v2: bool,
    pub num_classes: usize,
    pub head: HeadKind,
}

impl TResNetConfig {
    pub fn tresnet_m(num_classes: usize) -> Self {
        Self::variant([3, 4, 11, 3], 1.0, false, num_classes)
    }
    pub fn tresnet_l(num_classes: usize) -> Self {
        Self::variant([4, 5, 18, 3], 1.2, false, num_classes)
    }
    pub fn tresnet_xl(num_classes: usize) -> Self {
        Self::variant([4, 5, 24, 3], 1.3, false, num_classes)
    }
    pub fn tresnet_v2_l(num_classes: usize) -> Self {
        Self::variant([3, 4, 23, 3], 1.0, true, num_classes)
    }

    /// Any depth and width, with a linear head.
    pub fn variant(layers: [usize; 4], width_factor: f64, v2: bool, num_classes: usize) -> Self {
        TResNetConfig {
            layers,
            width_factor,
            v2,
            num_classes,
            head: HeadKind::Linear,
        }
    }

    /// The architecture names this crate knows, in the order [`Self::from_arch`] tries them.
    pub const ARCHS: [&'static str; 4] = ["tresnet_m", "tresnet_l", "tresnet_xl", "tresnet_v2_l"];

    /// A variant by name: timm's full-size names (`tresnet_m`, `tresnet_l`, `tresnet_xl`,
    /// `tresnet_v2_l`), or any depth and width as [`Self::name`] writes it
    /// (`tresnet_custom:1-1-1-1:0.25`, `tresnet_custom:2-2-2-2:0.5:v2`).
    pub fn from_arch(arch: &str, num_classes: usize) -> Option<Self> {
        match arch {
            "tresnet_m" => Some(Self::tresnet_m(num_classes)),
            "tresnet_l" => Some(Self::tresnet_l(num_classes)),
            "tresnet_xl" => Some(Self::tresnet_xl(num_classes)),
            "tresnet_v2_l" => Some(Self::tresnet_v2_l(num_classes)),
            _ => {
                let mut parts = arch.strip_prefix("tresnet_custom:")?.split(':');
                let layers: Vec<usize> = parts
                    .next()?
                    .split('-')
                    .map(|n| n.parse().ok().filter(|&n| n > 0))
                    .collect::<Option<_>>()?;
                let width: f64 = parts.next()?.parse().ok()?;
                let v2 = match parts.next() {
                    None => false,
                    Some("v2") => true,
                    Some(_) => return None,
                };
                let cfg = Self::variant(layers.try_into().ok()?, width, v2, num_classes);
                (parts.next().is_none() && width > 0.0 && cfg.planes() >= 8).then_some(cfg)
            }
        }
    }

    /// [`Self::from_arch`], an unknown name being [`crate::Error::UnknownArch`].
    pub fn named(arch: &str, num_classes: usize) -> crate::Result<Self> {
        Self::from_arch(arch, num_classes).ok_or_else(|| crate::Error::UnknownArch {
            name: arch.to_string(),
        })
    }

    /// The architecture's name: timm's for the four published variants, otherwise
    /// `tresnet_custom:L1-L2-L3-L4:WIDTH[:v2]`, which [`Self::from_arch`] reads back.
    pub fn name(&self) -> String {
        for arch in Self::ARCHS {
            if let Some(cfg) = Self::from_arch(arch, self.num_classes) {
                if cfg.layers == self.layers
                    && cfg.width_factor == self.width_factor
                    && cfg.v2 == self.v2
                {
                    return arch.to_string();
                }
            }
        }
        let l = self.layers;
        format!(
            "tresnet_custom:{}-{}-{}-{}:{}{}",
            l[0],
            l[1],
            l[2],
            l[3],
            self.width_factor,
            if self.v2 { ":v2" } else { "" }
        )
    }

    /// The stem width `P`.
    pub fn planes(&self) -> usize {
        let p = (64.0 * self.width_factor) as usize;
        if self.v2 {
            p / 8 * 8
        } else {
            p
        }
    }

    /// Channels of the pooled features the head sees (`8 P * 4`).
    pub fn num_features(&self) -> usize {
        self.planes() * 8 * EXPANSION
    }
}
