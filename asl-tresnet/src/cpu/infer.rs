//! The CPU f32 inference engine: the folded network run on plain buffers.
//!
//! Activations are kept channel-major, `[C, N, H, W]` ("CNHW"), for the whole forward pass: a
//! 1x1 convolution over the batch is then one `[O, C] x [C, N*H*W]` matrix product on the
//! activation as it lies, a 3x3 convolution the same product after an im2col, and the product's
//! output is already the next layer's input, with no transposes between layers. Every other op
//! works per `H x W` plane and does not care about the order of the planes.
//!
//! Buffers are recycled through a small pool for the length of one forward pass (no fresh,
//! page-faulting allocation per layer); the matrix products call the `gemm` crate (the one candle
//! uses) directly, accumulating the residual branch into the shortcut's buffer; bias,
//! activation, the SE rescale and the residual ReLU are fused into single passes.
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use candle_core::{DType, Device, Result, Tensor};
use rayon::prelude::*;

use super::buffers::{Act, Pool, SharedMut};
use super::primitives::{
    avg_pool_2x2_ceil, blur_planes_into, gemm_f32, im2col3x3, space_to_depth_cnhw,
};
use super::winograd;
use super::{add_time, tensor_f32, KindTimes};

/// A stride-1 "same" convolution (k = 1 or 3) with its BatchNorm folded into weight and bias,
/// an optional LeakyReLU, and an optional anti-aliasing blur (stride 2) after it.
pub(crate) struct ConvLayer {
    /// `[o, c * k * k]`, row-major (empty for a Winograd layer).
    weight: Vec<f32>,
    bias: Vec<f32>,
    c_in: usize,
    c_out: usize,
    k: usize,
    slope: Option<f32>,
    blur: bool,
    /// The Winograd form of a 3x3 layer (see `winograd.rs`), unless disabled.
    winograd: Option<winograd::Winograd>,
}

impl ConvLayer {
    pub(crate) fn new(
        weight: &Tensor,
        bias: &Tensor,
        slope: Option<f64>,
        blur: bool,
    ) -> Result<Self> {
        Self::with_winograd(weight, bias, slope, blur, winograd::inference_tile())
    }

    /// [`Self::new`], with Winograd of the given tile for a 3x3 layer or not (im2col).
    fn with_winograd(
        weight: &Tensor,
        bias: &Tensor,
        slope: Option<f64>,
        blur: bool,
        tile: Option<winograd::Tile>,
    ) -> Result<Self> {
        let (c_out, c_in, k, k2) = weight.dims4()?;
        if k != k2 || (k != 1 && k != 3) {
            candle_core::bail!("inference engine: {k}x{k2} convolutions are not supported");
        }
        let mut weight = tensor_f32(weight)?;
        let winograd = tile
            .filter(|_| k == 3)
            .map(|tile| winograd::Winograd::with_tile(&weight, c_out, c_in, tile));
        if winograd.is_some() {
            weight = Vec::new(); // only the im2col path reads it
        }
        Ok(ConvLayer {
            weight,
            bias: tensor_f32(bias)?,
            c_in,
            c_out,
            k,
            slope: slope.map(|s| s as f32),
            blur,
            winograd,
        })
    }

    /// Runs the layer. With `residual`, the output is `relu(conv(x) + bias + residual)`,
    /// accumulated in the residual's buffer (and `slope` and `blur` are not used).
    fn run(&self, x: &Act, residual: Option<Act>, pool: &mut Pool) -> Act {
        debug_assert_eq!(x.c, self.c_in);
        let nl = x.n * x.plane();
        let kk = self.c_in * self.k * self.k;
        let (mut out, accumulate) = match residual {
            Some(r) => {
                debug_assert_eq!(r.data.len(), self.c_out * nl);
                (r.data, true)
            }
            None => (pool.take(self.c_out * nl), false),
        };
        let act = if accumulate { Some(0.0) } else { self.slope };
        if let Some(wg) = &self.winograd {
            let wall = Instant::now();
            let ep = winograd::Epilogue {
                bias: &self.bias,
                accumulate,
                act,
            };
            let cpu = wg.run(&x.data, (x.n, x.h, x.w), &mut out, ep);
            if let Some(profile) = pool.profile.as_mut() {
                split_wall(
                    profile,
                    wall.elapsed(),
                    &["conv 3x3: Winograd transforms", "conv 3x3: gemm"],
                    &cpu.map(|d| d.as_secs_f64()),
                );
            }
        } else {
            match tile_width(kk, nl) {
                Some(tw) => self.run_tiled(x, &mut out, accumulate, act, tw, pool),
                None => self.run_whole(x, &mut out, accumulate, act, pool),
            }
        }
        let y = Act {
            data: out,
            c: self.c_out,
            n: x.n,
            h: x.h,
            w: x.w,
        };
        if self.blur && !accumulate {
            let (ho, wo) = (y.h.div_ceil(2), y.w.div_ceil(2));
            let out = pool.timed("blur", |pool| {
                let mut out = pool.take(y.c * y.n * ho * wo);
                blur_planes_into(&y.data, &mut out, y.h, y.w);
                out
            });
            pool.give(y.data);
            Act {
                data: out,
                h: ho,
                w: wo,
                ..y
            }
        } else {
            y
        }
    }
}

impl ConvLayer {
    /// The convolution as one multithreaded matrix product over all columns (after one im2col
    /// of the whole activation for 3x3), then the epilogue: for small activations, where column
    /// tiles would leave threads idle.
    fn run_whole(
        &self,
        x: &Act,
        out: &mut [f32],
        accumulate: bool,
        act: Option<f32>,
        pool: &mut Pool,
    ) {
        let nl = x.n * x.plane();
        let kk = self.c_in * self.k * self.k;
        let cols = (self.k == 3).then(|| {
            pool.timed("conv 3x3: im2col", |pool| {
                let mut cols = pool.take(kk * nl);
                im2col3x3(x, &mut cols, 0, nl);
                cols
            })
        });
        let rhs = cols.as_deref().unwrap_or(&x.data);
        let threads = rayon::current_num_threads();
        let parallelism = if threads > 1 {
            gemm::Parallelism::Rayon(threads)
        } else {
            gemm::Parallelism::None
        };
        pool.timed(self.gemm_kind(), |_| {
            // SAFETY: out, weight and rhs hold c_out x nl, c_out x kk and kk x nl elements.
            unsafe {
                gemm_f32(
                    (self.c_out, nl, kk),
                    (out.as_mut_ptr(), nl),
                    accumulate,
                    &self.weight,
                    (rhs.as_ptr(), nl),
                    parallelism,
                )
            }
        });
        if let Some(cols) = cols {
            pool.give(cols);
        }
        pool.timed(epilogue_kind(accumulate), |_| {
            out.par_chunks_mut(nl)
                .zip(self.bias.par_iter())
                .for_each(|(row, &b)| epilogue(row, b, act))
        });
    }

    /// The convolution tile by tile over the columns, each tile on one thread from start to end:
    /// the im2col of `tw` columns (sized to stay in L2), its matrix product, and the epilogue
    /// while the output tile is still in cache. No full-size im2col buffer is ever written.
    fn run_tiled(
        &self,
        x: &Act,
        out: &mut [f32],
        accumulate: bool,
        act: Option<f32>,
        tw: usize,
        pool: &mut Pool,
    ) {
        let nl = x.n * x.plane();
        let kk = self.c_in * self.k * self.k;
        assert!(out.len() >= self.c_out * nl && x.data.len() >= self.c_in * nl);
        let dst = SharedMut(out.as_mut_ptr());
        // CPU nanoseconds per part, when profiling: im2col, gemm, epilogue
        let cpu: [AtomicU64; 3] = Default::default();
        let profiling = pool.profile.is_some();
        let clock = |part: usize, since: &mut Instant| {
            if profiling {
                let now = Instant::now();
                cpu[part].fetch_add((now - *since).as_nanos() as u64, Ordering::Relaxed);
                *since = now;
            }
        };
        let wall = Instant::now();
        (0..nl.div_ceil(tw)).into_par_iter().for_each(|t| {
            let (j0, j1) = (t * tw, ((t + 1) * tw).min(nl));
            let cw = j1 - j0;
            SCRATCH.with(|scratch| {
                let mut scratch = scratch.borrow_mut();
                let mut since = Instant::now();
                let (rhs, rhs_rs) = if self.k == 3 {
                    scratch.resize(kk * cw, 0.0);
                    im2col3x3(x, &mut scratch, j0, j1);
                    (scratch.as_ptr(), cw)
                } else {
                    (x.data[j0..].as_ptr(), nl)
                };
                clock(0, &mut since);
                // SAFETY: the tile writes columns j0..j1 of every output row and no other tile
                // touches them; rhs holds kk rows of cw columns at stride rhs_rs.
                let dst = dst.get();
                unsafe {
                    gemm_f32(
                        (self.c_out, cw, kk),
                        (dst.add(j0), nl),
                        accumulate,
                        &self.weight,
                        (rhs, rhs_rs),
                        gemm::Parallelism::None,
                    )
                };
                clock(1, &mut since);
                for (o, &b) in self.bias.iter().enumerate() {
                    // SAFETY: as above, row o's columns j0..j1 belong to this tile alone.
                    let row = unsafe { std::slice::from_raw_parts_mut(dst.add(o * nl + j0), cw) };
                    epilogue(row, b, act);
                }
                clock(2, &mut since);
            })
        });
        if let Some(profile) = pool.profile.as_mut() {
            let kinds = [
                // a 1x1 layer's first part only picks its columns
                if self.k == 3 {
                    "conv 3x3: im2col"
                } else {
                    self.gemm_kind()
                },
                self.gemm_kind(),
                epilogue_kind(accumulate),
            ];
            let parts = cpu.map(|c| c.load(Ordering::Relaxed) as f64);
            split_wall(profile, wall.elapsed(), &kinds, &parts);
        }
    }

    fn gemm_kind(&self) -> &'static str {
        if self.k == 3 {
            "conv 3x3: gemm"
        } else {
            "conv 1x1: gemm"
        }
    }
}

thread_local! {
    /// Per-thread im2col tile.
    static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// im2col columns (f32) per tile: 1 MiB, half of this machine's L2 per core.
const TILE_FLOATS: usize = 1 << 18;

/// The column-tile width for a product with `kk` rows and `nl` columns, or `None` when there
/// are too few columns to give every thread a tile of a useful width.
fn tile_width(kk: usize, nl: usize) -> Option<usize> {
    let threads = rayon::current_num_threads();
    const MIN_WIDTH: usize = 64;
    if nl < 2 * threads * MIN_WIDTH {
        return None;
    }
    Some(
        (TILE_FLOATS / kk)
            .max(MIN_WIDTH)
            .min(nl.div_ceil(2 * threads)),
    )
}

/// Adds `wall` to the profile's `kinds`, split by each one's share of the CPU time `parts`
/// (several threads ran the parts interleaved).
fn split_wall(profile: &mut KindTimes, wall: Duration, kinds: &[&'static str], parts: &[f64]) {
    let total: f64 = parts.iter().sum::<f64>();
    if total <= 0.0 {
        return;
    }
    for (&kind, &part) in kinds.iter().zip(parts) {
        if part > 0.0 {
            add_time(profile, kind, wall.mul_f64(part / total));
        }
    }
}

fn epilogue_kind(accumulate: bool) -> &'static str {
    if accumulate {
        "residual add + ReLU"
    } else {
        "bias + LeakyReLU"
    }
}

/// `v + b`, then LeakyReLU with `slope` (ReLU for 0) when given.
#[inline]
fn epilogue(row: &mut [f32], b: f32, act: Option<f32>) {
    match act {
        Some(slope) => row.iter_mut().for_each(|v| {
            let t = *v + b;
            *v = if t >= 0.0 { t } else { t * slope };
        }),
        None => row.iter_mut().for_each(|v| *v += b),
    }
}

/// Squeeze-and-excitation: per-plane mean, 1x1 conv, ReLU, 1x1 conv, sigmoid.
pub(crate) struct SeLayer {
    /// `[r, c]`
    w1: Vec<f32>,
    b1: Vec<f32>,
    /// `[c, r]`
    w2: Vec<f32>,
    b2: Vec<f32>,
}

impl SeLayer {
    pub(crate) fn new(w1: &Tensor, b1: &Tensor, w2: &Tensor, b2: &Tensor) -> Result<Self> {
        Ok(SeLayer {
            w1: tensor_f32(w1)?,
            b1: tensor_f32(b1)?,
            w2: tensor_f32(w2)?,
            b2: tensor_f32(b2)?,
        })
    }

    /// The gates `[c, n]` (one per plane) for the activation `x`.
    fn gates(&self, x: &Act) -> Vec<f32> {
        let (c, n, r) = (x.c, x.n, self.b1.len());
        let plane = x.plane();
        let means: Vec<f32> = x
            .data
            .par_chunks(plane)
            .map(|p| p.iter().sum::<f32>() / plane as f32)
            .collect();
        let mut hidden = vec![0f32; r * n];
        for (j, hrow) in hidden.chunks_exact_mut(n).enumerate() {
            let wrow = &self.w1[j * c..][..c];
            for (img, hv) in hrow.iter_mut().enumerate() {
                let s: f32 = (0..c).map(|ch| wrow[ch] * means[ch * n + img]).sum();
                *hv = (s + self.b1[j]).max(0.0);
            }
        }
        let mut gates = vec![0f32; c * n];
        for (ch, grow) in gates.chunks_exact_mut(n).enumerate() {
            let wrow = &self.w2[ch * r..][..r];
            for (img, g) in grow.iter_mut().enumerate() {
                let s: f32 = (0..r).map(|j| wrow[j] * hidden[j * n + img]).sum();
                *g = 1.0 / (1.0 + (-(s + self.b2[ch])).exp());
            }
        }
        gates
    }
}

pub(crate) struct Shortcut {
    pub(crate) pool: bool,
    pub(crate) conv: ConvLayer,
}

pub(crate) enum EngineBlock {
    /// conv1 (3x3, act, maybe blur), conv2 (3x3, no act), SE, + shortcut, ReLU.
    Basic {
        conv1: ConvLayer,
        conv2: ConvLayer,
        se: Option<SeLayer>,
        downsample: Option<Shortcut>,
    },
    /// conv1 (1x1), conv2 (3x3, maybe blur), SE, conv3 (1x1, no act) + shortcut, ReLU.
    Bottleneck {
        conv1: ConvLayer,
        conv2: ConvLayer,
        se: Option<SeLayer>,
        conv3: ConvLayer,
        downsample: Option<Shortcut>,
    },
}

fn shortcut(ds: &Option<Shortcut>, x: Act, pool: &mut Pool) -> Act {
    match ds {
        None => x,
        Some(d) => {
            if d.pool {
                let p = pool.timed("avg pool", |pool| avg_pool_2x2_ceil(&x, pool));
                pool.give(x.data);
                let y = d.conv.run(&p, None, pool);
                pool.give(p.data);
                y
            } else {
                let y = d.conv.run(&x, None, pool);
                pool.give(x.data);
                y
            }
        }
    }
}

impl EngineBlock {
    fn run(&self, x: Act, pool: &mut Pool) -> Act {
        match self {
            EngineBlock::Basic {
                conv1,
                conv2,
                se,
                downsample,
            } => {
                let y1 = conv1.run(&x, None, pool);
                let mut y2 = conv2.run(&y1, None, pool);
                pool.give(y1.data);
                let sc = shortcut(downsample, x, pool);
                let plane = y2.plane();
                let gates = se
                    .as_ref()
                    .map(|se| pool.timed("SE: gates", |_| se.gates(&y2)));
                // relu(y2 * gate + shortcut), one pass, in y2's buffer
                pool.timed("residual add + ReLU", |_| {
                    y2.data
                        .par_chunks_mut(plane)
                        .zip(sc.data.par_chunks(plane))
                        .enumerate()
                        .for_each(|(p, (o, s))| {
                            let g = gates.as_ref().map_or(1.0, |g| g[p]);
                            o.iter_mut()
                                .zip(s)
                                .for_each(|(o, &s)| *o = (*o * g + s).max(0.0));
                        })
                });
                pool.give(sc.data);
                y2
            }
            EngineBlock::Bottleneck {
                conv1,
                conv2,
                se,
                conv3,
                downsample,
            } => {
                let y1 = conv1.run(&x, None, pool);
                let mut y2 = conv2.run(&y1, None, pool);
                pool.give(y1.data);
                if let Some(se) = se {
                    let gates = pool.timed("SE: gates", |_| se.gates(&y2));
                    let plane = y2.plane();
                    pool.timed("SE: rescale", |_| {
                        y2.data
                            .par_chunks_mut(plane)
                            .zip(gates.par_iter())
                            .for_each(|(o, &g)| o.iter_mut().for_each(|v| *v *= g))
                    });
                }
                let sc = shortcut(downsample, x, pool);
                let y3 = conv3.run(&y2, Some(sc), pool);
                pool.give(y2.data);
                y3
            }
        }
    }
}

/// The whole folded backbone, up to the pooled features.
pub(crate) struct Engine {
    pub(crate) stem: ConvLayer,
    pub(crate) blocks: Vec<EngineBlock>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("blocks", &self.blocks.len())
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// The last activation of a checked `[N, 3, H, W]` batch, and the pool (with the profile).
    fn run(&self, x: &Tensor, profile: bool) -> Result<(Act, Pool)> {
        let (n, c, h, w) = x.dims4()?;
        let pixels = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        let mut pool = Pool::new(profile);
        let a = pool.timed("space-to-depth", |pool| {
            space_to_depth_cnhw(&pixels, n, c, h, w, pool)
        });
        drop(pixels);
        let y = self.stem.run(&a, None, &mut pool);
        pool.give(a.data);
        let mut a = y;
        for block in &self.blocks {
            a = block.run(a, &mut pool);
        }
        Ok((a, pool))
    }

    /// Pooled features `[N, C]` of a checked `[N, 3, H, W]` batch; with `profile`, also the
    /// time spent in each kind of op (leaf ops only, in the order first met).
    pub(crate) fn features(&self, x: &Tensor, profile: bool) -> Result<(Tensor, KindTimes)> {
        let (a, mut pool) = self.run(x, profile)?;
        let n = a.n;
        let feats = pool.timed("global pool", |_| {
            // the mean of each plane, then [C, N] -> [N, C]
            let plane = a.plane();
            let means: Vec<f32> = a
                .data
                .par_chunks(plane)
                .map(|p| p.iter().sum::<f32>() / plane as f32)
                .collect();
            let mut feats = vec![0f32; n * a.c];
            for ch in 0..a.c {
                for img in 0..n {
                    feats[img * a.c + ch] = means[ch * n + img];
                }
            }
            feats
        });
        let feats = Tensor::from_vec(feats, (n, a.c), &Device::Cpu)?;
        Ok((feats, pool.profile.unwrap_or_default()))
    }

    /// The last stage's feature map `[N, C, H, W]` of a checked batch.
    pub(crate) fn feature_map(&self, x: &Tensor) -> Result<Tensor> {
        let (a, _) = self.run(x, false)?;
        Tensor::from_vec(a.data, (a.c, a.n, a.h, a.w), &Device::Cpu)?
            .permute((1, 0, 2, 3))?
            .contiguous()
    }
}

#[cfg(test)]
mod tests {
    use super::winograd::Tile;
    use super::{Act, ConvLayer, Pool};
    use candle_core::{Device, Tensor};

    /// A tile of the im2col matrix is the same columns of the whole matrix, for tiles that
    /// start and end mid-row and span images.
    #[test]
    fn winograd_and_im2col_paths_agree() {
        // both Winograd tiles and paths (few tiles, chunks) and both im2col paths (whole,
        // tiled), with and without a residual
        let cases = [(16, 8, 1, 9, 11), (24, 32, 4, 30, 31)];
        for ((c_in, c_out, n, h, w), tile) in cases
            .into_iter()
            .flat_map(|c| [(c, Tile::F2), (c, Tile::F4)])
        {
            let dev = Device::Cpu;
            let weight = Tensor::randn(0f32, 0.2, (c_out, c_in, 3, 3), &dev).expect("w");
            let bias = Tensor::randn(0f32, 0.5, c_out, &dev).expect("b");
            let layer = |tile| ConvLayer::with_winograd(&weight, &bias, Some(0.01), false, tile);
            let fast = layer(Some(tile)).expect("layer");
            let plain = layer(None).expect("layer");
            assert!(fast.winograd.is_some() && plain.winograd.is_none());
            let x = Act {
                data: Tensor::randn(0f32, 1., c_in * n * h * w, &dev)
                    .and_then(|t| t.to_vec1())
                    .expect("x"),
                c: c_in,
                n,
                h,
                w,
            };
            let res: Vec<f32> = Tensor::randn(0f32, 1., c_out * n * h * w, &dev)
                .and_then(|t| t.to_vec1())
                .expect("residual");
            let mut pool = Pool::default();
            for residual in [false, true] {
                let act = |l: &ConvLayer, pool: &mut Pool| {
                    let r = residual.then(|| Act {
                        data: res.clone(),
                        c: c_out,
                        n,
                        h,
                        w,
                    });
                    l.run(&x, r, pool).data
                };
                let (a, b) = (act(&fast, &mut pool), act(&plain, &mut pool));
                let worst = a
                    .iter()
                    .zip(&b)
                    .map(|(p, q)| (p - q).abs() / (1.0 + q.abs()))
                    .fold(0f32, f32::max);
                // F(4x4, 3x3) rounds about ten times more than F(2x2, 3x3) (see winograd)
                let tol = match tile {
                    Tile::F2 => 1e-5,
                    Tile::F4 => 1e-4,
                };
                assert!(
                    worst < tol,
                    "{tile:?} {c_in}->{c_out} {h}x{w} residual {residual}: {worst}"
                );
            }
        }
    }
}
