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

use candle_core::{DType, Device, Result, Tensor};
use rayon::prelude::*;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Channel-major activations `[c, n, h, w]`.
pub(crate) struct Act {
    pub(crate) data: Vec<f32>,
    pub(crate) c: usize,
    pub(crate) n: usize,
    pub(crate) h: usize,
    pub(crate) w: usize,
}

impl Act {
    pub(crate) fn plane(&self) -> usize {
        self.h * self.w
    }
}

/// Buffers freed during one forward pass, handed out again best-fit; and, when profiling, the
/// time spent in each kind of op.
#[derive(Default)]
pub(crate) struct Pool {
    free: Vec<Vec<f32>>,
    profile: Option<Vec<(&'static str, Duration)>>,
}

impl Pool {
    /// Runs `f`, adding its time to `kind` when profiling. Only leaf ops are timed.
    fn timed<R>(&mut self, kind: &'static str, f: impl FnOnce(&mut Pool) -> R) -> R {
        if self.profile.is_none() {
            return f(self);
        }
        let start = Instant::now();
        let r = f(self);
        let spent = start.elapsed();
        if let Some(p) = self.profile.as_mut() {
            add_time(p, kind, spent);
        }
        r
    }

    /// A buffer of `len` elements with unspecified contents.
    fn take(&mut self, len: usize) -> Vec<f32> {
        let best = self
            .free
            .iter()
            .enumerate()
            .filter(|(_, b)| b.capacity() >= len)
            .min_by_key(|(_, b)| b.capacity())
            .map(|(i, _)| i);
        match best {
            Some(i) => {
                let mut b = self.free.swap_remove(i);
                b.resize(len, 0.0);
                b
            }
            None => {
                vec![0.0; len]
            }
        }
    }

    fn give(&mut self, b: Vec<f32>) {
        self.free.push(b);
    }
}

pub(crate) fn tensor_f32(t: &Tensor) -> Result<Vec<f32>> {
    t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()
}

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
    winograd: Option<crate::winograd::Winograd>,
}

impl ConvLayer {
    pub(crate) fn new(
        weight: &Tensor,
        bias: &Tensor,
        slope: Option<f64>,
        blur: bool,
    ) -> Result<Self> {
        Self::with_winograd(weight, bias, slope, blur, crate::winograd::enabled())
    }

    /// [`Self::new`], with Winograd for a 3x3 layer or not (im2col).
    fn with_winograd(
        weight: &Tensor,
        bias: &Tensor,
        slope: Option<f64>,
        blur: bool,
        winograd: bool,
    ) -> Result<Self> {
        let (c_out, c_in, k, k2) = weight.dims4()?;
        if k != k2 || (k != 1 && k != 3) {
            candle_core::bail!("inference engine: {k}x{k2} convolutions are not supported");
        }
        let mut weight = tensor_f32(weight)?;
        let winograd =
            (k == 3 && winograd).then(|| crate::winograd::Winograd::new(&weight, c_out, c_in));
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
            let ep = crate::winograd::Epilogue {
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
                crate::ops::blur_planes_into(&y.data, &mut out, y.h, y.w);
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

/// A pointer shared by threads that write disjoint parts of one buffer (the column tiles of a
/// convolution here, the tile rows and channels of `winograd.rs`).
#[derive(Clone, Copy)]
pub(crate) struct SharedMut(pub(crate) *mut f32);
// SAFETY: only used for disjoint writes (see run_tiled and winograd.rs's callers).
unsafe impl Send for SharedMut {}
unsafe impl Sync for SharedMut {}

impl SharedMut {
    pub(crate) fn get(self) -> *mut f32 {
        self.0
    }
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
fn split_wall(
    profile: &mut Vec<(&'static str, Duration)>,
    wall: Duration,
    kinds: &[&'static str],
    parts: &[f64],
) {
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

pub(crate) fn add_time(
    profile: &mut Vec<(&'static str, Duration)>,
    kind: &'static str,
    spent: Duration,
) {
    match profile.iter_mut().find(|(k, _)| *k == kind) {
        Some((_, t)) => *t += spent,
        None => profile.push((kind, spent)),
    }
}

/// `dst[m x n] (+)= lhs[m x k] * rhs[k x n]`, row-major with the given row strides, unit column
/// strides.
///
/// # Safety
/// `dst` must be valid for writes (and reads with `accumulate`) of `m` rows of `n` elements at
/// row stride `dst.1`, `rhs` valid for reads of `k` rows of `n` at stride `rhs.1`, and neither
/// may overlap the other or `lhs`.
pub(crate) unsafe fn gemm_f32(
    (m, n, k): (usize, usize, usize),
    dst: (*mut f32, usize),
    accumulate: bool,
    lhs: &[f32],
    rhs: (*const f32, usize),
    parallelism: gemm::Parallelism,
) {
    assert!(lhs.len() >= m * k);
    gemm::gemm(
        m,
        n,
        k,
        dst.0,
        1,
        dst.1 as isize,
        accumulate,
        lhs.as_ptr(),
        1,
        k as isize,
        rhs.0,
        1,
        rhs.1 as isize,
        1.0,
        1.0,
        false,
        false,
        false,
        parallelism,
    )
}

/// Columns `j0..j1` of the im2col matrix of a 3x3, padding-1 convolution of a CNHW
/// activation, written to `out` as `[c * 9, j1 - j0]`: row `ch * 9 + ky * 3 + kx`, column
/// `img * h * w + y * w + x` holds channel `ch` of image `img` at `(y + ky - 1, x + kx - 1)`,
/// zero outside the image. Every element is written (no zero-fill first). Parallel over
/// channels when the range is the whole matrix.
pub(crate) fn im2col3x3(x: &Act, out: &mut [f32], j0: usize, j1: usize) {
    let (n, h, w) = (x.n, x.h, x.w);
    let plane = h * w;
    let width = j1 - j0;
    let channel = |ch: usize, dst: &mut [f32]| {
        for tap in 0..9 {
            let (ky, kx) = (tap / 3, tap % 3);
            let d = &mut dst[tap * width..][..width];
            // one image row segment at a time
            let mut j = j0;
            while j < j1 {
                let (img, rem) = (j / plane, j % plane);
                let (y, x0) = (rem / w, rem % w);
                let len = (w - x0).min(j1 - j);
                let seg = &mut d[j - j0..][..len];
                // source row y + ky - 1; outside the image it is the zero padding
                let sy = y + ky;
                if sy == 0 || sy > h {
                    seg.fill(0.0);
                } else {
                    // source column x + kx - 1 is inside for lo <= x < hi
                    let lo = x0.max(1 - kx.min(1));
                    let hi = (x0 + len).min(w + 1 - kx.max(1));
                    let src = &x.data[(ch * n + img) * plane + (sy - 1) * w..][..w];
                    seg[..lo - x0].fill(0.0);
                    seg[lo - x0..hi - x0].copy_from_slice(&src[lo + kx - 1..hi + kx - 1]);
                    seg[hi - x0..].fill(0.0);
                }
                j += len;
            }
        }
    };
    let chunks = out[..x.c * 9 * width].chunks_mut(9 * width);
    if width == n * plane {
        chunks
            .collect::<Vec<_>>()
            .into_par_iter()
            .enumerate()
            .for_each(|(ch, dst)| channel(ch, dst));
    } else {
        chunks.enumerate().for_each(|(ch, dst)| channel(ch, dst));
    }
}

/// `AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False)` on every plane.
pub(crate) fn avg_pool_2x2_ceil(x: &Act, pool: &mut Pool) -> Act {
    let (h, w) = (x.h, x.w);
    let (ho, wo) = (h.div_ceil(2), w.div_ceil(2));
    let mut out = pool.take(x.c * x.n * ho * wo);
    out.par_chunks_mut(ho * wo)
        .zip(x.data.par_chunks(h * w))
        .for_each(|(o, src)| {
            for oy in 0..ho {
                let rows = &src[2 * oy * w..(2 * oy + 2).min(h) * w];
                let nr = rows.len() / w;
                for ox in 0..wo {
                    let cols = 2 * ox..(2 * ox + 2).min(w);
                    let count = (nr * cols.len()) as f32;
                    let sum: f32 = rows
                        .chunks_exact(w)
                        .map(|r| r[cols.clone()].iter().sum::<f32>())
                        .sum();
                    o[oy * wo + ox] = sum / count;
                }
            }
        });
    Act {
        data: out,
        c: x.c,
        n: x.n,
        h: ho,
        w: wo,
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
    /// Pooled features `[N, C]` of a checked `[N, 3, H, W]` batch; with `profile`, also the
    /// time spent in each kind of op (leaf ops only, in the order first met).
    pub(crate) fn features(
        &self,
        x: &Tensor,
        profile: bool,
    ) -> Result<(Tensor, Vec<(&'static str, Duration)>)> {
        let (n, c, h, w) = x.dims4()?;
        let pixels = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        let mut pool = Pool {
            free: Vec::new(),
            profile: profile.then(Vec::new),
        };
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
}

/// `[N, C, H, W]` pixels to the CNHW space-to-depth activation `[16 C, N, H/4, W/4]`, channel
/// `(dy * 4 + dx) * C + c` as timm's `SpaceToDepth`.
pub(crate) fn space_to_depth_cnhw(
    x: &[f32],
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    pool: &mut Pool,
) -> Act {
    let (ho, wo) = (h / 4, w / 4);
    let mut out = pool.take(16 * c * n * ho * wo);
    out.par_chunks_mut(ho * wo).enumerate().for_each(|(p, o)| {
        let (ch_out, img) = (p / n, p % n);
        let (d, ch) = (ch_out / c, ch_out % c);
        let (dy, dx) = (d / 4, d % 4);
        let src = &x[(img * c + ch) * h * w..][..h * w];
        for y in 0..ho {
            let srow = &src[(4 * y + dy) * w..][..w];
            for (xx, v) in o[y * wo..(y + 1) * wo].iter_mut().enumerate() {
                *v = srow[4 * xx + dx];
            }
        }
    });
    Act {
        data: out,
        c: 16 * c,
        n,
        h: ho,
        w: wo,
    }
}

#[cfg(test)]
mod tests {
    use super::{Act, ConvLayer, Pool};
    use crate::{TResNet, TResNetConfig};
    use candle_core::{DType, Device, Tensor};
    use candle_nn::{VarBuilder, VarMap};
    use std::collections::HashMap;

    /// The engine (f32) against candle's ops on the same folded weights (the f64 inference path,
    /// which has no engine), on a batch of 3 at an odd size, for both block types and both heads.
    #[test]
    fn engine_matches_candle_ops() {
        for (cfg, size) in [
            (
                TResNetConfig::variant([1, 2, 2, 1], 0.125, false, 5),
                (228, 196),
            ),
            (
                TResNetConfig::variant([2, 1, 1, 2], 0.25, true, 3),
                (64, 100),
            ),
            (
                TResNetConfig {
                    head: crate::HeadKind::Bottleneck { embedding: 16 },
                    ..TResNetConfig::variant([1, 1, 1, 1], 0.125, false, 4)
                },
                (36, 44),
            ),
        ] {
            let vars = VarMap::new();
            TResNet::new(
                &cfg,
                VarBuilder::from_varmap(&vars, DType::F64, &Device::Cpu),
            )
            .expect("random model");
            // non-trivial BatchNorm statistics and gammas (some negative)
            let mut tensors: HashMap<String, Tensor> = HashMap::new();
            for (name, var) in vars.data().lock().expect("vars").iter() {
                let t = var.as_tensor();
                let t = if name.contains(".bn.") {
                    let r = Tensor::rand(0.5, 1.5, t.shape(), &Device::Cpu).expect("rand");
                    if name.ends_with("running_var") {
                        r
                    } else {
                        (r - 1.0).expect("shift")
                    }
                } else {
                    t.clone()
                };
                tensors.insert(name.clone(), t);
            }
            let f32s: HashMap<String, Tensor> = tensors
                .iter()
                .map(|(k, v)| (k.clone(), v.to_dtype(DType::F32).expect("f32")))
                .collect();
            let build = |t: HashMap<String, Tensor>, dt| {
                TResNet::new(&cfg, VarBuilder::from_tensors(t, dt, &Device::Cpu))
                    .and_then(TResNet::into_inference)
                    .expect("inference model")
            };
            let reference = build(tensors, DType::F64);
            let engine = build(f32s, DType::F32);
            assert!(reference.engine.is_none() && engine.engine.is_some());
            let x = Tensor::rand(0f64, 1., (3, 3, size.0, size.1), &Device::Cpu).expect("x");
            let want = reference.forward_t(&x, false).expect("candle path");
            let got = engine
                .forward_t(&x.to_dtype(DType::F32).expect("f32"), false)
                .expect("engine")
                .to_dtype(DType::F64)
                .expect("f64");
            assert_eq!(got.dims(), want.dims());
            let scale = want
                .abs()
                .and_then(|a| a.max_all())
                .and_then(|m| m.to_scalar::<f64>());
            let diff = (got - &want)
                .and_then(|d| d.abs())
                .and_then(|d| d.max_all())
                .and_then(|m| m.to_scalar::<f64>());
            let (scale, diff) = (scale.expect("scale"), diff.expect("diff"));
            assert!(scale > 0.0);
            assert!(
                diff <= 1e-4 * scale,
                "{cfg:?} at {size:?}: max |diff| {diff} against a scale of {scale}"
            );
            let x32 = x.to_dtype(DType::F32).expect("f32");
            let (logits, times) = engine.forward_profiled(&x32).expect("profiled");
            let plain = engine.forward_t(&x32, false).expect("forward");
            let same = (logits - plain)
                .and_then(|d| d.abs())
                .and_then(|d| d.max_all())
                .and_then(|m| m.to_scalar::<f32>());
            assert_eq!(same.expect("diff"), 0.0, "profiling changes nothing");
            assert!(times.iter().any(|(k, _)| *k == "conv 3x3: gemm"));
            assert!(
                reference.forward_profiled(&x).is_err(),
                "no engine, no profile"
            );
        }
    }

    /// A tile of the im2col matrix is the same columns of the whole matrix, for tiles that
    /// start and end mid-row and span images.
    #[test]
    fn winograd_and_im2col_paths_agree() {
        // both Winograd paths (few tiles, chunks) and both im2col paths (whole, tiled), with
        // and without a residual
        for (c_in, c_out, n, h, w) in [(16, 8, 1, 9, 11), (24, 32, 4, 30, 31)] {
            let dev = Device::Cpu;
            let weight = Tensor::randn(0f32, 0.2, (c_out, c_in, 3, 3), &dev).expect("w");
            let bias = Tensor::randn(0f32, 0.5, c_out, &dev).expect("b");
            let fast = ConvLayer::new(&weight, &bias, Some(0.01), false).expect("layer");
            let plain =
                ConvLayer::with_winograd(&weight, &bias, Some(0.01), false, false).expect("layer");
            assert!(fast.winograd.is_some() || !crate::winograd::enabled());
            assert!(plain.winograd.is_none());
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
                assert!(
                    worst < 1e-5,
                    "{c_in}->{c_out} {h}x{w} residual {residual}: {worst}"
                );
            }
        }
    }

    #[test]
    fn im2col_tiles_are_columns_of_the_whole() {
        let (c, n, h, w) = (3, 2, 5, 7);
        let data: Vec<f32> = (0..c * n * h * w).map(|i| i as f32 + 1.0).collect();
        let x = super::Act { data, c, n, h, w };
        let nl = n * h * w;
        let mut whole = vec![f32::NAN; c * 9 * nl];
        super::im2col3x3(&x, &mut whole, 0, nl);
        // spot checks of the definition: centre tap is the input, corner taps see the padding
        assert_eq!(whole[4 * nl..5 * nl], x.data[..nl]);
        assert_eq!(whole[0], 0.0); // tap (0, 0) at (0, 0) reads (-1, -1)
        assert_eq!(whole[w + 1], x.data[0]); // tap (0, 0) at (1, 1) reads (0, 0)
        assert_eq!(whole[8 * nl + w - 1], 0.0); // tap (2, 2) at (0, w-1) reads (1, w)
        for (j0, j1) in [(0, 1), (3, 40), (33, 70), (69, 70), (0, nl)] {
            let width = j1 - j0;
            let mut tile = vec![f32::NAN; c * 9 * width];
            super::im2col3x3(&x, &mut tile, j0, j1);
            for r in 0..c * 9 {
                assert_eq!(
                    tile[r * width..(r + 1) * width],
                    whole[r * nl + j0..r * nl + j1],
                    "row {r}, columns {j0}..{j1}"
                );
            }
        }
    }
}
