//! The exponential moving average of the weights and BatchNorm statistics (the paper's EMA
//! model, validated beside the raw one).

use std::collections::HashMap;

use candle_core::{Result, Tensor, Var};

use super::adam::inplace;

/// The EMA copy of every variable, by name.
pub(crate) struct Ema {
    pub(crate) tensors: HashMap<String, Tensor>,
}

impl Ema {
    /// Starts at the current values of `named`.
    pub(crate) fn new(named: &[(String, Var)]) -> Result<Ema> {
        Ok(Ema {
            tensors: snapshot(named)?,
        })
    }

    /// `e = decay e + (1 - decay) w` for every variable (in place for CPU f32 tensors).
    pub(crate) fn update(&mut self, named: &[(String, Var)], decay: f64) -> Result<()> {
        for (name, var) in named {
            if let Some(old) = self.tensors.get_mut(name) {
                let w = var.as_tensor();
                if inplace::eligible(&[old, w]) {
                    old.inplace_op2(
                        w,
                        &inplace::Ema {
                            decay: decay as f32,
                        },
                    )?;
                } else {
                    *old = ((&*old * decay)? + (w * (1.0 - decay))?)?;
                }
            }
        }
        Ok(())
    }
}

/// A copy of every variable's current value, by name.
pub(crate) fn snapshot(named: &[(String, Var)]) -> Result<HashMap<String, Tensor>> {
    named
        .iter()
        .map(|(k, v)| Ok((k.clone(), v.as_tensor().copy()?)))
        .collect()
}
