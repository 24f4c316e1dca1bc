//! Winograd convolutions for the stride-1, padding-1 3x3 convolutions of the CPU engines
//! (every 3x3 convolution of TResNet is one: its downsampling is the blur after it):
//! F(2x2, 3x3) here, used by both engines (the training engine's forward, input and weight
//! gradients), and F(4x4, 3x3) in [`f4`], which the inference engine uses with
//! `ASL_WINOGRAD=4` (fewer multiplies, but its transforms cost more than they save so far).
//!
//! Each 2x2 block of outputs ("tile") is computed from the 4x4 input patch around it in the
//! transformed domain: `Y = Aᵀ [ Σ_c (G g Gᵀ) ⊙ (Bᵀ d B) ] A`. The channel sum of the 16
//! element-wise products is 16 matrix products `M_k = U_k V_k` (`U_k`: `[O, C]`, the transformed
//! weights; `V_k`: `[C, T]`, the transformed patches of T tiles), 4 multiplies per output instead
//! of 9 (2.25x fewer), plus the cheap transforms. Lavin & Gray, "Fast Algorithms for
//! Convolutional Neural Networks" (2016); the matrices (cross-correlation, as PyTorch's conv2d):
//!
//! ```text
//! Bᵀ = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]   G = [1 0 0; ½ ½ ½; ½ -½ ½; 0 0 1]
//! Aᵀ = [1 1 1 0; 0 1 -1 -1]
//! ```
//!
//! Activations are channel-major `[C, N, H, W]` as in the engine; H or W that are not a
//! multiple of the tile size leave the last tiles partly outside (zero padding in, nothing
//! written out).

mod f4;

use rayon::prelude::*;

use super::buffers::SharedMut;

/// Whether the engines use Winograd for 3x3 convolutions: yes unless `ASL_WINOGRAD=0` (for A/B
/// measurements against the im2col path; read once).
pub(crate) fn enabled() -> bool {
    inference_tile().is_some()
}

/// The inference engine's Winograd tile: F(2x2, 3x3), or F(4x4, 3x3) with `ASL_WINOGRAD=4`,
/// none (im2col) with `ASL_WINOGRAD=0` (read once).
pub(crate) fn inference_tile() -> Option<Tile> {
    static TILE: std::sync::OnceLock<Option<Tile>> = std::sync::OnceLock::new();
    *TILE.get_or_init(|| match std::env::var("ASL_WINOGRAD").as_deref() {
        Ok("0") => None,
        Ok("4") => Some(Tile::F4),
        _ => Some(Tile::F2),
    })
}

/// The output block a Winograd convolution computes at once: F(2x2, 3x3) (16 products per
/// 2x2 block, 4 per output) or F(4x4, 3x3) (36 per 4x4 block, 2.25 per output).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tile {
    F2,
    F4,
}

impl Tile {
    /// Outputs per block side.
    fn m(self) -> usize {
        match self {
            Tile::F2 => 2,
            Tile::F4 => 4,
        }
    }
    /// Elements of a transformed patch: the number of matrix products.
    fn planes(self) -> usize {
        (self.m() + 2) * (self.m() + 2)
    }

    /// `Bᵀ d B` of channel `c`'s patches for tile rows `r0..r1` (see [`input_transform`]).
    fn input_transform(
        self,
        x: &[f32],
        c: usize,
        g: &Tiles,
        rows: (usize, usize),
        v: &mut [f32],
        k_stride: usize,
    ) {
        match self {
            Tile::F2 => input_transform(x, c, g, rows, v, k_stride),
            Tile::F4 => f4::input_transform(x, c, g, rows, v, k_stride),
        }
    }

    /// `Aᵀ m A` of output channel `o` for tile rows `r0..r1` (see [`output_transform`]).
    ///
    /// # Safety
    /// As [`output_transform`].
    #[allow(clippy::too_many_arguments)]
    unsafe fn output_transform(
        self,
        m: &[f32],
        o: usize,
        k_stride: usize,
        g: &Tiles,
        rows: (usize, usize),
        dst: SharedMut,
        ep: Epilogue,
    ) {
        match self {
            Tile::F2 => output_transform(m, o, k_stride, g, rows, dst, ep),
            Tile::F4 => f4::output_transform(m, o, k_stride, g, rows, dst, ep),
        }
    }
}

/// The transformed weights of one 3x3 convolution: `u[k][o][c]`, k = (m + 2) * row + column of
/// the transformed kernel.
pub(crate) struct Winograd {
    u: Vec<f32>,
    c_in: usize,
    c_out: usize,
    tile: Tile,
}

/// Where a tile's output goes and how it is finished: `out[o]` is `y + bias[o]` (plus what
/// `out` held, when `accumulate`), then LeakyReLU with `act`'s slope when given.
#[derive(Clone, Copy)]
pub(crate) struct Epilogue<'a> {
    pub(crate) bias: &'a [f32],
    pub(crate) accumulate: bool,
    pub(crate) act: Option<f32>,
}

/// The geometry of one convolution's tiles.
#[derive(Clone, Copy)]
struct Tiles {
    n: usize,
    h: usize,
    w: usize,
    th: usize,
    tw: usize,
}

impl Tiles {
    /// F(2x2, 3x3)'s tiles.
    fn new(n: usize, h: usize, w: usize) -> Tiles {
        Tiles::of(Tile::F2, n, h, w)
    }
    fn of(tile: Tile, n: usize, h: usize, w: usize) -> Tiles {
        Tiles {
            n,
            h,
            w,
            th: h.div_ceil(tile.m()),
            tw: w.div_ceil(tile.m()),
        }
    }
    /// Tile rows (one per image and tile row) in all.
    fn rows(&self) -> usize {
        self.n * self.th
    }
}

thread_local! {
    /// Per-thread scratch: transformed patches and products of a chunk of tiles.
    static SCRATCH: std::cell::RefCell<(Vec<f32>, Vec<f32>)> =
        const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

/// Floats of the scratch (patches + products) per chunk: 2 MiB, this machine's L2 per core.
const CHUNK_FLOATS: usize = 1 << 19;
const MIN_CHUNK: usize = 16;

impl Winograd {
    /// Output channels.
    pub(crate) fn c_out(&self) -> usize {
        self.c_out
    }

    /// F(2x2, 3x3) from the `[o, c, 3, 3]` row-major weights.
    pub(crate) fn new(weight: &[f32], c_out: usize, c_in: usize) -> Winograd {
        Winograd::with_tile(weight, c_out, c_in, Tile::F2)
    }

    /// The given tile's form of the `[o, c, 3, 3]` row-major weights.
    pub(crate) fn with_tile(weight: &[f32], c_out: usize, c_in: usize, tile: Tile) -> Winograd {
        assert_eq!(weight.len(), c_out * c_in * 9);
        Winograd::from_fn(c_out, c_in, tile, |o, c| {
            std::array::from_fn(|t| weight[(o * c_in + c) * 9 + t])
        })
    }

    /// The convolution that gives the input gradient of the stride-1, padding-1 convolution
    /// with `weight` (`[c_out, c_in, 3, 3]`): `dx = conv(dy, w')` with `w'[c][o]` = `w[o][c]`
    /// flipped in both directions (a `c_in` x `c_out` kernel).
    pub(crate) fn for_input_grad(weight: &[f32], c_out: usize, c_in: usize) -> Winograd {
        assert_eq!(weight.len(), c_out * c_in * 9);
        Winograd::from_fn(c_in, c_out, Tile::F2, |c, o| {
            std::array::from_fn(|t| weight[(o * c_in + c) * 9 + 8 - t])
        })
    }

    /// From a function giving the 3x3 kernel (row-major) of output `o` and input `c`; the
    /// transform `G g Gᵀ` runs in parallel over the outputs.
    fn from_fn(
        c_out: usize,
        c_in: usize,
        tile: Tile,
        kernel: impl Fn(usize, usize) -> [f32; 9] + Sync,
    ) -> Winograd {
        let planes = tile.planes();
        // [o][k][c] first (each output's rows together), then [k][o][c]
        let mut by_o = vec![0f32; planes * c_out * c_in];
        by_o.par_chunks_mut(planes * c_in)
            .enumerate()
            .for_each(|(o, uo)| {
                for c in 0..c_in {
                    let g = kernel(o, c);
                    let mut put = |k: usize, v: f32| uo[k * c_in + c] = v;
                    match tile {
                        Tile::F2 => kernel_f2(g)
                            .into_iter()
                            .enumerate()
                            .for_each(|(k, v)| put(k, v)),
                        Tile::F4 => f4::kernel(g)
                            .into_iter()
                            .enumerate()
                            .for_each(|(k, v)| put(k, v)),
                    }
                }
            });
        let plane = c_out * c_in;
        let mut u = vec![0f32; planes * plane];
        u.par_chunks_mut(plane).enumerate().for_each(|(k, uk)| {
            for (o, row) in uk.chunks_exact_mut(c_in).enumerate() {
                row.copy_from_slice(&by_o[(o * planes + k) * c_in..][..c_in]);
            }
        });
        Winograd {
            u,
            c_in,
            c_out,
            tile,
        }
    }

    /// The convolution of `x` (`[c_in, n, h, w]`) into `out` (`[c_out, n, h, w]`), finished by
    /// `ep`. Returns the CPU time of the transforms and of the matrix products (for profiles).
    pub(crate) fn run(
        &self,
        x: &[f32],
        (n, h, w): (usize, usize, usize),
        out: &mut [f32],
        ep: Epilogue,
    ) -> [std::time::Duration; 2] {
        let tiles = Tiles::of(self.tile, n, h, w);
        let planes = self.tile.planes();
        assert!(x.len() >= self.c_in * n * h * w && out.len() >= self.c_out * n * h * w);
        assert_eq!(ep.bias.len(), self.c_out);
        let rows = tiles.rows();
        let threads = rayon::current_num_threads();
        // chunks of whole tile rows, the scratch of one in L2, at least two per thread
        let chunk_rows = (CHUNK_FLOATS / (planes * (self.c_in + self.c_out) * tiles.tw))
            .max(1)
            .min(rows.div_ceil(2 * threads));
        let nanos: [std::sync::atomic::AtomicU64; 2] = Default::default();
        let add = |i: usize, d: std::time::Duration| {
            nanos[i].fetch_add(d.as_nanos() as u64, std::sync::atomic::Ordering::Relaxed);
        };
        let dst = SharedMut(out.as_mut_ptr());
        if rows >= 2 * threads && chunk_rows * tiles.tw >= MIN_CHUNK {
            // many tiles: each thread runs a chunk of tile rows from patches to outputs
            (0..rows.div_ceil(chunk_rows))
                .into_par_iter()
                .for_each(|i| {
                    let (r0, r1) = (i * chunk_rows, ((i + 1) * chunk_rows).min(rows));
                    SCRATCH.with(|s| {
                        let (v, m) = &mut *s.borrow_mut();
                        let tc = (r1 - r0) * tiles.tw;
                        v.resize(planes * self.c_in * tc, 0.0);
                        m.resize(planes * self.c_out * tc, 0.0);
                        let start = std::time::Instant::now();
                        for c in 0..self.c_in {
                            self.tile
                                .input_transform(x, c, &tiles, (r0, r1), v, self.c_in * tc);
                        }
                        let t_in = start.elapsed();
                        let (ci, co) = (self.c_in * tc, self.c_out * tc);
                        for k in 0..planes {
                            self.product(k, &v[k * ci..], &mut m[k * co..], tc);
                        }
                        let t_gemm = start.elapsed() - t_in;
                        for o in 0..self.c_out {
                            // SAFETY: rows r0..r1 own their outputs; no other chunk writes them.
                            unsafe {
                                self.tile.output_transform(
                                    m,
                                    o,
                                    self.c_out * tc,
                                    &tiles,
                                    (r0, r1),
                                    dst,
                                    ep,
                                )
                            };
                        }
                        add(0, start.elapsed() - t_gemm);
                        add(1, t_gemm);
                    })
                });
        } else {
            // few tiles (small maps): transforms parallel over channels, the 16 products in
            // parallel
            let start = std::time::Instant::now();
            let v = transform_input(self.tile, x, self.c_in, (n, h, w));
            let t_gemm = self.run_from_v(&v, (n, h, w), out, ep);
            add(0, start.elapsed() - t_gemm);
            add(1, t_gemm);
        }
        nanos.map(|a| std::time::Duration::from_nanos(a.into_inner()))
    }

    /// The convolution from the transformed input `v` of [`transform_input`]
    /// (`[k][c_in][T]`, T all tiles): the products in parallel, then the output transform in
    /// parallel over the output channels. Returns the time of the products.
    fn run_from_v(
        &self,
        v: &[f32],
        (n, h, w): (usize, usize, usize),
        out: &mut [f32],
        ep: Epilogue,
    ) -> std::time::Duration {
        let tiles = Tiles::of(self.tile, n, h, w);
        let t_all = tiles.rows() * tiles.tw;
        let planes = self.tile.planes();
        assert!(v.len() >= planes * self.c_in * t_all && out.len() >= self.c_out * n * h * w);
        assert_eq!(ep.bias.len(), self.c_out);
        let start = std::time::Instant::now();
        let mut m = vec![0f32; planes * self.c_out * t_all];
        m.par_chunks_mut(self.c_out * t_all)
            .enumerate()
            .for_each(|(k, m_k)| self.product(k, &v[k * self.c_in * t_all..], m_k, t_all));
        let t_gemm = start.elapsed();
        let dst = SharedMut(out.as_mut_ptr());
        let m_ref = &m;
        (0..self.c_out).into_par_iter().for_each(|o| unsafe {
            // SAFETY: output channel o writes only its own plane.
            self.tile.output_transform(
                m_ref,
                o,
                self.c_out * t_all,
                &tiles,
                (0, tiles.rows()),
                dst,
                ep,
            )
        });
        t_gemm
    }

    /// `m_k = u_k v_k` for a chunk of `tc` tiles (`v`: `[k][c_in][tc]`, `m`: `[k][c_out][tc]`).
    /// (`v`, `m`: from plane k on, or `v_k`, `m_k` themselves with `k` only picking `u_k`).
    fn product(&self, k: usize, v_k: &[f32], m_k: &mut [f32], tc: usize) {
        let plane = self.c_out * self.c_in;
        assert!(v_k.len() >= self.c_in * tc && m_k.len() >= self.c_out * tc);
        // SAFETY: the slices hold the [c_out, tc], [c_out, c_in] and [c_in, tc] matrices.
        unsafe {
            super::primitives::gemm_f32(
                (self.c_out, tc, self.c_in),
                (m_k.as_mut_ptr(), tc),
                false,
                &self.u[k * plane..(k + 1) * plane],
                (v_k.as_ptr(), tc),
                gemm::Parallelism::None,
            )
        }
    }
}

/// `Bᵀ d B` of every patch of `x` (`[c, n, h, w]`): `v` `[k][c][T]`, T all tiles in row-major
/// order per image. Parallel over the channels.
fn transform_input(tile: Tile, x: &[f32], c: usize, (n, h, w): (usize, usize, usize)) -> Vec<f32> {
    let tiles = Tiles::of(tile, n, h, w);
    let t_all = tiles.rows() * tiles.tw;
    assert!(x.len() >= c * n * h * w);
    let mut v = vec![0f32; tile.planes() * c * t_all];
    let vs = SharedMut(v.as_mut_ptr());
    let len = v.len();
    (0..c).into_par_iter().for_each(|ch| {
        // SAFETY: channel ch writes only its own rows of every plane; `v` outlives the loop.
        let v = unsafe { std::slice::from_raw_parts_mut(vs.get(), len) };
        tile.input_transform(x, ch, &tiles, (0, tiles.rows()), v, c * t_all);
    });
    v
}

/// F(2x2, 3x3)'s `G g Gᵀ` of a 3x3 kernel (row-major): the 4x4 transformed kernel, row-major.
fn kernel_f2(g: [f32; 9]) -> [f32; 16] {
    // G g: 4x3
    let mut gg = [[0f32; 3]; 4];
    for j in 0..3 {
        let (g0, g1, g2) = (g[j], g[3 + j], g[6 + j]);
        gg[0][j] = g0;
        gg[1][j] = 0.5 * (g0 + g1 + g2);
        gg[2][j] = 0.5 * (g0 - g1 + g2);
        gg[3][j] = g2;
    }
    // (G g) Gᵀ: 4x4
    let mut u = [0f32; 16];
    for (i, r) in gg.iter().enumerate() {
        let row = [
            r[0],
            0.5 * (r[0] + r[1] + r[2]),
            0.5 * (r[0] - r[1] + r[2]),
            r[2],
        ];
        u[4 * i..4 * i + 4].copy_from_slice(&row);
    }
    u
}

/// Reduction pieces of [`weight_grad`]'s tiled path: fixed (not the thread count), so the
/// partial sums add up in the same order on every machine.
const DW_PIECES: usize = 8;

/// The weight gradient `[c_out, c_in, 3, 3]` of the convolution of `x` (`[c_in, n, h, w]`)
/// whose output gradient is `dy` (`[c_out, n, h, w]`), each step the adjoint of the forward
/// pass's: `dM = A dY Aᵀ` per tile (outputs past an odd edge have no gradient), `dU_k = Σ dM_k
/// V_kᵀ` over the tiles (`V`: the forward's transformed patches), `dW = Gᵀ dU G`.
///
/// Many tiles: [`DW_PIECES`] pieces of tile rows in parallel, each in chunks whose `V` and `dM`
/// stay in L2, each summing into its own `dU`; the pieces are then added in order. Few tiles
/// (small maps, many channels): whole `V` and `dM`, the 16 products in parallel.
pub(crate) fn weight_grad(
    dy: &[f32],
    x: &[f32],
    (c_out, c_in): (usize, usize),
    (n, h, w): (usize, usize, usize),
) -> Vec<f32> {
    let g = Tiles::new(n, h, w);
    let (rows, tw) = (g.rows(), g.tw);
    let t_all = rows * tw;
    assert!(dy.len() >= c_out * n * h * w && x.len() >= c_in * n * h * w);
    let pieces = rows.min(DW_PIECES);
    let plane_u = c_out * c_in;
    // dU_k (+)= dM_k V_kᵀ for the tc tiles of a chunk
    let product = |du: &mut [f32], dm: &[f32], v: &[f32], tc: usize, accumulate: bool| {
        for k in 0..16 {
            let du_k = &mut du[k * plane_u..][..plane_u];
            dm_vt(
                du_k,
                &dm[k * c_out * tc..],
                &v[k * c_in * tc..],
                (c_out, c_in, tc),
                accumulate,
            );
        }
    };
    let du = if pieces >= 2 && pieces * c_out <= t_all {
        let per = rows.div_ceil(pieces);
        let chunk_rows = (CHUNK_FLOATS / (16 * (c_in + c_out) * tw)).max(1);
        let partials: Vec<Vec<f32>> = (0..rows.div_ceil(per))
            .into_par_iter()
            .map(|p| {
                let mut du = vec![0f32; 16 * plane_u];
                let (ra, rb) = (p * per, ((p + 1) * per).min(rows));
                SCRATCH.with(|s| {
                    let (v, dm) = &mut *s.borrow_mut();
                    let mut r0 = ra;
                    while r0 < rb {
                        let r1 = (r0 + chunk_rows).min(rb);
                        let tc = (r1 - r0) * tw;
                        v.resize(16 * c_in * tc, 0.0);
                        dm.resize(16 * c_out * tc, 0.0);
                        for c in 0..c_in {
                            input_transform(x, c, &g, (r0, r1), v, c_in * tc);
                        }
                        for o in 0..c_out {
                            output_grad_transform(dy, o, &g, (r0, r1), dm, c_out * tc);
                        }
                        product(&mut du, dm, v, tc, r0 > ra);
                        r0 = r1;
                    }
                });
                du
            })
            .collect();
        let mut du = vec![0f32; 16 * plane_u];
        for part in &partials {
            du.par_iter_mut()
                .zip(part.par_iter())
                .for_each(|(d, p)| *d += p);
        }
        du
    } else {
        let v = transform_input(Tile::F2, x, c_in, (n, h, w));
        let mut dm = vec![0f32; 16 * c_out * t_all];
        let ds = SharedMut(dm.as_mut_ptr());
        let len = dm.len();
        (0..c_out).into_par_iter().for_each(|o| {
            // SAFETY: channel o writes only its own rows of every plane.
            let dm = unsafe { std::slice::from_raw_parts_mut(ds.get(), len) };
            output_grad_transform(dy, o, &g, (0, rows), dm, c_out * t_all);
        });
        let mut du = vec![0f32; 16 * plane_u];
        du.par_chunks_mut(plane_u)
            .enumerate()
            .for_each(|(k, du_k)| {
                let (dm_k, v_k) = (&dm[k * c_out * t_all..], &v[k * c_in * t_all..]);
                dm_vt(du_k, dm_k, v_k, (c_out, c_in, t_all), false);
            });
        du
    };
    // dW = Gᵀ dU G, with G = [1 0 0; ½ ½ ½; ½ -½ ½; 0 0 1]
    let gm = [
        [1f32, 0.0, 0.0],
        [0.5, 0.5, 0.5],
        [0.5, -0.5, 0.5],
        [0.0, 0.0, 1.0],
    ];
    let mut dw = vec![0f32; c_out * c_in * 9];
    dw.par_chunks_mut(c_in * 9)
        .enumerate()
        .for_each(|(o, dw_o)| {
            for c in 0..c_in {
                let du_at = |i: usize, j: usize| du[(4 * i + j) * plane_u + o * c_in + c];
                for a in 0..3 {
                    for b in 0..3 {
                        let mut s = 0f32;
                        for (i, gi) in gm.iter().enumerate() {
                            for (j, gj) in gm.iter().enumerate() {
                                s += gi[a] * du_at(i, j) * gj[b];
                            }
                        }
                        dw_o[c * 9 + a * 3 + b] = s;
                    }
                }
            }
        });
    dw
}

/// `du (+)= dm · vᵀ` for `dm` `[c_out, tc]` and `v` `[c_in, tc]` (row-major), `du` `[c_out,
/// c_in]`: one thread, the reduction over the tiles in one fixed order.
fn dm_vt(
    du: &mut [f32],
    dm: &[f32],
    v: &[f32],
    (c_out, c_in, tc): (usize, usize, usize),
    accumulate: bool,
) {
    assert!(du.len() >= c_out * c_in && dm.len() >= c_out * tc && v.len() >= c_in * tc);
    // SAFETY: the asserts bound every index the strides reach; the slices are distinct borrows.
    unsafe {
        gemm::gemm(
            c_out,
            c_in,
            tc,
            du.as_mut_ptr(),
            1,
            c_in as isize,
            accumulate,
            dm.as_ptr(),
            1,
            tc as isize,
            v.as_ptr(),
            tc as isize,
            1,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// `A dY Aᵀ` of output channel `o`'s gradient for tile rows `r0..r1`, into
/// `dm[k * k_stride + o * tc + t]` (the adjoint of [`output_transform`]; outputs past an odd
/// edge contribute nothing).
fn output_grad_transform(
    dy: &[f32],
    o: usize,
    g: &Tiles,
    (r0, r1): (usize, usize),
    dm: &mut [f32],
    k_stride: usize,
) {
    let (tw, plane) = (g.tw, g.h * g.w);
    let tc = (r1 - r0) * tw;
    // A over the columns of the two output rows of a tile row: q[a][j], [2][4][tw]
    let mut q = vec![0f32; 8 * tw];
    for row in r0..r1 {
        let (img, ty) = (row / g.th, row % g.th);
        for a in 0..2 {
            let qa = &mut q[a * 4 * tw..][..4 * tw];
            let yy = 2 * ty + a;
            if yy >= g.h {
                qa.fill(0.0);
                continue;
            }
            let src = &dy[(o * g.n + img) * plane + yy * g.w..][..g.w];
            let (q0, rest) = qa.split_at_mut(tw);
            let (q1, rest) = rest.split_at_mut(tw);
            let (q2, q3) = rest.split_at_mut(tw);
            for t in 0..tw {
                let d0 = src[2 * t];
                let d1 = if 2 * t + 1 < g.w { src[2 * t + 1] } else { 0.0 };
                q0[t] = d0;
                q1[t] = d0 + d1;
                q2[t] = d0 - d1;
                q3[t] = -d1;
            }
        }
        // A over the rows: dM[0] = q0, dM[1] = q0 + q1, dM[2] = q0 - q1, dM[3] = -q1
        let col0 = o * tc + (row - r0) * tw;
        for j in 0..4 {
            let (p0, p1) = (&q[j * tw..][..tw], &q[4 * tw + j * tw..][..tw]);
            let at = |i: usize| (4 * i + j) * k_stride + col0;
            dm[at(0)..][..tw].copy_from_slice(p0);
            for ((d, &a), &b) in dm[at(1)..][..tw].iter_mut().zip(p0).zip(p1) {
                *d = a + b;
            }
            for ((d, &a), &b) in dm[at(2)..][..tw].iter_mut().zip(p0).zip(p1) {
                *d = a - b;
            }
            for (d, &b) in dm[at(3)..][..tw].iter_mut().zip(p1) {
                *d = -b;
            }
        }
    }
}

/// `Bᵀ d B` of channel `c`'s patches for tile rows `r0..r1`, into
/// `v[k * k_stride + c * tc + t]` (t: the tile's index from the start of row r0).
///
/// Vectorised over the tiles of a row: with the input row padded by one zero on the left, the
/// patch of tile t spans padded columns 2t..2t+3, so its four columns are `e[t]`, `o[t]`,
/// `e[t+1]`, `o[t+1]` of the row's even and odd padded columns.
fn input_transform(
    x: &[f32],
    c: usize,
    g: &Tiles,
    (r0, r1): (usize, usize),
    v: &mut [f32],
    k_stride: usize,
) {
    let tc = (r1 - r0) * g.tw;
    let plane = g.h * g.w;
    let tw = g.tw;
    assert!(15 * k_stride + c * tc + tc <= v.len());
    // even / odd padded columns of the four input rows, then Bᵀ of them: [4][tw + 1] each
    let mut e = vec![0f32; 4 * (tw + 1)];
    let mut o = vec![0f32; 4 * (tw + 1)];
    let mut be = vec![0f32; 4 * (tw + 1)];
    let mut bo = vec![0f32; 4 * (tw + 1)];
    for row in r0..r1 {
        let (img, ty) = (row / g.th, row % g.th);
        let base = &x[(c * g.n + img) * plane..][..plane];
        for r in 0..4 {
            let (er, or) = (
                &mut e[r * (tw + 1)..][..tw + 1],
                &mut o[r * (tw + 1)..][..tw + 1],
            );
            let y = 2 * ty + r;
            if y == 0 || y > g.h {
                er.fill(0.0); // padding rows (input row y - 1)
                or.fill(0.0);
                continue;
            }
            let src = &base[(y - 1) * g.w..][..g.w];
            // e[t] = src[2t - 1], o[t] = src[2t]; e[0] and anything past the row are padding
            er[0] = 0.0;
            or[0] = src[0];
            let pairs = (g.w - 1) / 2; // t = 1..=pairs have both in the row
            for ((pe, po), p) in er[1..=pairs]
                .iter_mut()
                .zip(&mut or[1..=pairs])
                .zip(src[1..].chunks_exact(2))
            {
                *pe = p[0];
                *po = p[1];
            }
            for t in pairs + 1..=tw {
                er[t] = if 2 * t - 1 < g.w { src[2 * t - 1] } else { 0.0 };
                or[t] = 0.0;
            }
        }
        // Bᵀ over the rows, on the even and odd columns alike
        for (a, b) in [(&e, &mut be), (&o, &mut bo)] {
            let (a0, a1, a2, a3) = (
                &a[..tw + 1],
                &a[tw + 1..][..tw + 1],
                &a[2 * (tw + 1)..][..tw + 1],
                &a[3 * (tw + 1)..][..tw + 1],
            );
            let (b01, b23) = b.split_at_mut(2 * (tw + 1));
            let (b0, b1) = b01.split_at_mut(tw + 1);
            let (b2, b3) = b23.split_at_mut(tw + 1);
            for t in 0..=tw {
                b0[t] = a0[t] - a2[t];
                b1[t] = a1[t] + a2[t];
                b2[t] = a2[t] - a1[t];
                b3[t] = a1[t] - a3[t];
            }
        }
        // B over the columns, into the 16 planes
        let col0 = c * tc + (row - r0) * tw;
        for i in 0..4 {
            let (ei, oi) = (&be[i * (tw + 1)..][..tw + 1], &bo[i * (tw + 1)..][..tw + 1]);
            let at = |j: usize| (4 * i + j) * k_stride + col0;
            let v0 = &mut v[at(0)..][..tw];
            for t in 0..tw {
                v0[t] = ei[t] - ei[t + 1];
            }
            let v1 = &mut v[at(1)..][..tw];
            for t in 0..tw {
                v1[t] = oi[t] + ei[t + 1];
            }
            let v2 = &mut v[at(2)..][..tw];
            for t in 0..tw {
                v2[t] = ei[t + 1] - oi[t];
            }
            let v3 = &mut v[at(3)..][..tw];
            for t in 0..tw {
                v3[t] = oi[t] - oi[t + 1];
            }
        }
    }
}

/// `Aᵀ m A` of output channel `o` for tile rows `r0..r1` (`m[k * k_stride + o * tc + t]`),
/// finished by `ep` and written to `dst`'s plane `o`. Vectorised over the tiles of a row.
///
/// # Safety
/// `dst` holds `[c_out, n, h, w]`, and no other thread writes these rows of plane `o`.
unsafe fn output_transform(
    m: &[f32],
    o: usize,
    k_stride: usize,
    g: &Tiles,
    (r0, r1): (usize, usize),
    dst: SharedMut,
    ep: Epilogue,
) {
    let tc = (r1 - r0) * g.tw;
    let plane = g.h * g.w;
    let tw = g.tw;
    let b = ep.bias[o];
    // Aᵀ over the rows: [2][4][tw]; then one output row: [2 tw]
    let mut rr = vec![0f32; 8 * tw];
    let mut y = vec![0f32; 2 * tw];
    for row in r0..r1 {
        let (img, ty) = (row / g.th, row % g.th);
        let col0 = o * tc + (row - r0) * tw;
        let q = |k: usize| &m[k * k_stride + col0..][..tw];
        {
            let (top, bottom) = rr.split_at_mut(4 * tw);
            for j in 0..4 {
                let (q0, q1, q2, q3) = (q(j), q(4 + j), q(8 + j), q(12 + j));
                let (t0, t1) = (&mut top[j * tw..][..tw], &mut bottom[j * tw..][..tw]);
                for t in 0..tw {
                    t0[t] = q0[t] + q1[t] + q2[t];
                    t1[t] = q1[t] - q2[t] - q3[t];
                }
            }
        }
        for a in 0..2 {
            let yy = 2 * ty + a;
            if yy >= g.h {
                break;
            }
            let ra = &rr[a * 4 * tw..][..4 * tw];
            let (p0, p1, p2, p3) = (
                &ra[..tw],
                &ra[tw..2 * tw],
                &ra[2 * tw..3 * tw],
                &ra[3 * tw..],
            );
            // A over the columns, interleaved into the output row
            for (t, pair) in y.chunks_exact_mut(2).enumerate() {
                pair[0] = p0[t] + p1[t] + p2[t];
                pair[1] = p1[t] - p2[t] - p3[t];
            }
            let out = std::slice::from_raw_parts_mut(
                dst.get().add((o * g.n + img) * plane + yy * g.w),
                g.w,
            );
            store_row(out, &y[..g.w], b, ep);
        }
    }
}

/// One output row `y` of a tile row into `out`, finished by `ep` with the channel's bias `b`.
#[inline]
fn store_row(out: &mut [f32], y: &[f32], b: f32, ep: Epilogue) {
    match (ep.accumulate, ep.act) {
        (false, None) => out.iter_mut().zip(y).for_each(|(p, &v)| *p = v + b),
        (false, Some(s)) => out.iter_mut().zip(y).for_each(|(p, &v)| {
            let t = v + b;
            *p = if t >= 0.0 { t } else { t * s };
        }),
        (true, None) => out.iter_mut().zip(y).for_each(|(p, &v)| *p += v + b),
        (true, Some(s)) => out.iter_mut().zip(y).for_each(|(p, &v)| {
            let t = *p + v + b;
            *p = if t >= 0.0 { t } else { t * s };
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Direct cross-correlation, padding 1, in f64.
    #[allow(clippy::too_many_arguments)]
    fn direct(
        x: &[f32],
        wt: &[f32],
        (c_in, c_out, n, h, w): (usize, usize, usize, usize, usize),
    ) -> Vec<f64> {
        let mut y = vec![0f64; c_out * n * h * w];
        for o in 0..c_out {
            for img in 0..n {
                for i in 0..h {
                    for j in 0..w {
                        let mut s = 0f64;
                        for c in 0..c_in {
                            for a in 0..3 {
                                for b in 0..3 {
                                    let (yy, xx) = (i as isize + a - 1, j as isize + b - 1);
                                    if (0..h as isize).contains(&yy)
                                        && (0..w as isize).contains(&xx)
                                    {
                                        s += x[((c * n + img) * h + yy as usize) * w + xx as usize]
                                            as f64
                                            * wt[((o * c_in + c) * 3 + a as usize) * 3 + b as usize]
                                                as f64;
                                    }
                                }
                            }
                        }
                        y[((o * n + img) * h + i) * w + j] = s;
                    }
                }
            }
        }
        y
    }

    fn rand(len: usize, seed: &mut u64) -> Vec<f32> {
        (0..len)
            .map(|_| {
                *seed ^= *seed << 13;
                *seed ^= *seed >> 7;
                *seed ^= *seed << 17;
                (*seed >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn input_grad_is_the_adjoint() {
        // <conv(x), dy> = <x, conv_for_input_grad(dy)> for random x, dy
        let mut seed = 0xDEAD_BEEF_1234_5678;
        for &(c_in, c_out, n, h, w) in &[(3, 5, 2, 7, 6), (4, 2, 1, 1, 3), (6, 7, 3, 12, 11)] {
            let x = rand(c_in * n * h * w, &mut seed);
            let dy = rand(c_out * n * h * w, &mut seed);
            let wt = rand(c_out * c_in * 9, &mut seed);
            let y = direct(&x, &wt, (c_in, c_out, n, h, w));
            let mut dx = vec![0f32; x.len()];
            let zeros = vec![0f32; c_in];
            let ep = Epilogue {
                bias: &zeros,
                accumulate: false,
                act: None,
            };
            Winograd::for_input_grad(&wt, c_out, c_in).run(&dy, (n, h, w), &mut dx, ep);
            let lhs: f64 = y.iter().zip(&dy).map(|(a, &b)| a * b as f64).sum();
            let rhs: f64 = x.iter().zip(&dx).map(|(&a, &b)| a as f64 * b as f64).sum();
            assert!(
                (lhs - rhs).abs() <= 1e-4 * (1.0 + lhs.abs()),
                "{c_in}x{c_out} {h}x{w}: {lhs} vs {rhs}"
            );
        }
    }

    #[test]
    fn weight_grad_matches_direct() {
        let mut seed = 0x1234_5678_9ABC_DEF1;
        // both paths: whole (few tiles) and pieces of chunks
        for &(c_in, c_out, n, h, w) in &[
            (3, 4, 2, 5, 7),
            (5, 2, 1, 6, 6),
            (2, 3, 3, 1, 1),
            (2, 3, 4, 17, 9),
            (3, 2, 2, 40, 13),
            // several L2 chunks per piece
            (24, 24, 1, 80, 274),
        ] {
            let x = rand(c_in * n * h * w, &mut seed);
            let dy = rand(c_out * n * h * w, &mut seed);
            let got = weight_grad(&dy, &x, (c_out, c_in), (n, h, w));
            // <dW, R> = <conv_R(x), dy> for any kernel R (the loss <conv_W(x), dy> is linear
            // in W): three random directions, and on the small cases every one-hot one (each
            // weight's gradient on its own)
            let mut dirs: Vec<Vec<f32>> = (0..3).map(|_| rand(got.len(), &mut seed)).collect();
            if got.len() <= 120 {
                for i in 0..got.len() {
                    let mut e = vec![0f32; got.len()];
                    e[i] = 1.0;
                    dirs.push(e);
                }
            }
            for r in &dirs {
                let lhs: f64 = got.iter().zip(r).map(|(&g, &q)| g as f64 * q as f64).sum();
                let y = direct(&x, r, (c_in, c_out, n, h, w));
                let rhs: f64 = y.iter().zip(&dy).map(|(a, &b)| a * b as f64).sum();
                assert!(
                    (lhs - rhs).abs() <= 1e-5 * (1.0 + rhs.abs()) * ((n * h * w) as f64).sqrt(),
                    "{c_in}x{c_out} n{n} {h}x{w}: {lhs} vs {rhs}"
                );
            }
        }
    }

    #[test]
    fn winograd_matches_direct_convolution() {
        let mut seed = 0x9E37_79B9_7F4A_7C15;
        // odd and even sizes, 1x1 and 1xW maps, both paths (few tiles and chunks)
        for &(c_in, c_out, n, h, w) in &[
            (3, 4, 1, 5, 7),
            (8, 5, 2, 6, 6),
            (4, 3, 1, 1, 1),
            (2, 2, 3, 1, 9),
            (16, 24, 2, 28, 27),
            (24, 8, 8, 14, 14),
            (2, 3, 1, 5, 131),
            (3, 2, 4, 9, 130),
        ] {
            let x = rand(c_in * n * h * w, &mut seed);
            let wt = rand(c_out * c_in * 9, &mut seed);
            let bias = rand(c_out, &mut seed);
            let res = rand(c_out * n * h * w, &mut seed);
            let want = direct(&x, &wt, (c_in, c_out, n, h, w));
            for (tile, (accumulate, act)) in [Tile::F2, Tile::F4].into_iter().flat_map(|t| {
                [(false, None), (false, Some(0.01f32)), (true, Some(0.0))].map(|e| (t, e))
            }) {
                let wg = Winograd::with_tile(&wt, c_out, c_in, tile);
                // F(4x4, 3x3)'s transforms scale by up to 100 (Bᵀ ⊗ Bᵀ) and 64 (Aᵀ ⊗ Aᵀ), so
                // its f32 rounding is about ten times F(2x2, 3x3)'s
                let tol = match tile {
                    Tile::F2 => 1e-5,
                    Tile::F4 => 1e-4,
                };
                let mut out = if accumulate {
                    res.clone()
                } else {
                    vec![f32::NAN; res.len()]
                };
                wg.run(
                    &x,
                    (n, h, w),
                    &mut out,
                    Epilogue {
                        bias: &bias,
                        accumulate,
                        act,
                    },
                );
                let plane = n * h * w;
                for (i, (&got, &y)) in out.iter().zip(&want).enumerate() {
                    let mut e = y + bias[i / plane] as f64;
                    if accumulate {
                        e += res[i] as f64;
                    }
                    if let Some(s) = act {
                        e = if e >= 0.0 { e } else { e * s as f64 };
                    }
                    assert!(
                        (got as f64 - e).abs() <= tol * (1.0 + e.abs()) * (c_in as f64).sqrt(),
                        "{tile:?} {c_in}x{c_out} n{n} {h}x{w} acc {accumulate} act {act:?} at \
                         {i}: {got} vs {e}"
                    );
                }
            }
        }
    }
}
