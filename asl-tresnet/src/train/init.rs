//! The model's variables by name, and the reference's initialisation of a fresh model drawn from
//! a seeded stream.

use candle_core::{Tensor, Var};
use candle_nn::VarMap;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::{Error, Result};

/// Every variable of a VarMap, sorted by name.
pub(crate) fn named_vars(vars: &VarMap) -> Result<Vec<(String, Var)>> {
    let data = vars
        .data()
        .lock()
        .map_err(|_| Error::Config("VarMap lock poisoned".into()))?;
    let mut named: Vec<(String, Var)> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(named)
}

pub(crate) fn is_running_stat(name: &str) -> bool {
    name.ends_with("running_mean") || name.ends_with("running_var")
}

/// Overwrites a fresh model's variables with the reference's initialisation (timm
/// `TResNet._init_weights`): convolutions Kaiming-normal (fan out, gain sqrt 2), BatchNorm
/// weight 1 and bias 0 except the last BatchNorm of every residual branch (weight 0), the
/// classifier normal(0, 0.01) with zero bias; SE biases zero. Every value comes from `rng`, so
/// the initial model is a function of the seed.
pub(crate) fn reference_init(named: &[(String, Var)], rng: &mut ChaCha8Rng) -> Result<()> {
    for (name, var) in named {
        let t = var.as_tensor();
        let dims = t.dims().to_vec();
        let n = t.elem_count();
        let normal = |rng: &mut ChaCha8Rng, std: f64| -> Vec<f32> {
            (0..n)
                .map(|_| {
                    // Box-Muller
                    let (u1, u2): (f64, f64) = (rng.random::<f64>().max(1e-300), rng.random());
                    (std * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
                })
                .collect()
        };
        let values: Option<Vec<f32>> = if name.starts_with("head.") {
            Some(if dims.len() == 2 {
                normal(rng, 0.01)
            } else {
                vec![0.0; n]
            })
        } else if dims.len() == 4 {
            // every convolution, the SE ones included
            let fan_out = dims[0] * dims[2] * dims[3];
            Some(normal(rng, (2.0 / fan_out as f64).sqrt()))
        } else if name.ends_with("bn.weight") {
            let last = name.ends_with("conv3.bn.weight")
                || (name.ends_with("conv2.bn.weight") && is_basic_conv2(name, named));
            Some(vec![if last { 0.0 } else { 1.0 }; n])
        } else if name.ends_with("bn.bias") {
            Some(vec![0.0; n])
        } else if name.ends_with(".bias") {
            // SE biases: zero (PyTorch draws them uniformly; zero keeps the init seeded)
            Some(vec![0.0; n])
        } else {
            None // running statistics keep their initial 0 (mean) and 1 (variance)
        };
        if let Some(v) = values {
            var.set(&Tensor::from_vec(v, dims, t.device())?.to_dtype(t.dtype())?)?;
        }
    }
    Ok(())
}

/// Whether `name` (`...conv2.bn.weight`) belongs to a BasicBlock (no conv3 in the same block).
fn is_basic_conv2(name: &str, named: &[(String, Var)]) -> bool {
    let block = name.trim_end_matches("conv2.bn.weight");
    !named
        .iter()
        .any(|(n, _)| n.starts_with(block) && n.contains(".conv3."))
}
