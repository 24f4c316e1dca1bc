//! The transforms of Winograd F(4x4, 3x3): each 4x4 block of outputs from the 6x6 input patch
//! around it, 36 matrix products per block (2.25 multiplies per output instead of F(2x2, 3x3)'s
//! 4). Interpolation points 0, ±1, ±2 and ∞ (Lavin & Gray 2016), for cross-correlation:
//!
//! ```text
//! Bᵀ = [4 0 -5 0 1 0; 0 -4 -4 1 1 0; 0 4 -4 -1 1 0; 0 -2 -1 2 1 0; 0 2 -1 -2 1 0; 0 4 0 -5 0 1]
//! G  = [1/4 0 0; -1/6 -1/6 -1/6; -1/6 1/6 -1/6; 1/24 1/12 1/6; 1/24 -1/12 1/6; 0 0 1]
//! Aᵀ = [1 1 1 1 1 0; 0 1 -1 2 -2 0; 0 1 1 4 4 0; 0 1 -1 8 -8 1]
//! ```
//!
//! The transforms run on whole rows of tiles at once, vectorised over the tiles (see
//! [`input_transform`]).

use super::{store_row, Epilogue, SharedMut, Tiles};

/// `Bᵀ d` of one column `d` of six values.
#[inline(always)]
fn bt(d: [f32; 6]) -> [f32; 6] {
    let [d0, d1, d2, d3, d4, d5] = d;
    [
        4.0 * d0 - 5.0 * d2 + d4,
        (d3 + d4) - 4.0 * (d1 + d2),
        (d4 - d3) + 4.0 * (d1 - d2),
        (d4 - d2) + 2.0 * (d3 - d1),
        (d4 - d2) - 2.0 * (d3 - d1),
        4.0 * d1 - 5.0 * d3 + d5,
    ]
}

/// `Aᵀ m` of one column `m` of six values.
#[inline(always)]
fn at(m: [f32; 6]) -> [f32; 4] {
    let [m0, m1, m2, m3, m4, m5] = m;
    let (sum12, dif12, sum34, dif34) = (m1 + m2, m1 - m2, m3 + m4, m3 - m4);
    [
        m0 + sum12 + sum34,
        dif12 + 2.0 * dif34,
        sum12 + 4.0 * sum34,
        dif12 + 8.0 * dif34 + m5,
    ]
}

/// `G r` of one column `r` of three values, in f64.
fn g_col([g0, g1, g2]: [f64; 3]) -> [f64; 6] {
    [
        g0 / 4.0,
        -(g0 + g1 + g2) / 6.0,
        -(g0 - g1 + g2) / 6.0,
        g0 / 24.0 + g1 / 12.0 + g2 / 6.0,
        g0 / 24.0 - g1 / 12.0 + g2 / 6.0,
        g2,
    ]
}

/// `G g Gᵀ` of a 3x3 kernel (row-major), computed in f64: the 6x6 transformed kernel,
/// row-major.
pub(super) fn kernel(g: [f32; 9]) -> [f32; 36] {
    // G g: 6x3, column by column
    let mut gg = [[0f64; 3]; 6];
    for j in 0..3 {
        let col = g_col([g[j] as f64, g[3 + j] as f64, g[6 + j] as f64]);
        for (row, v) in gg.iter_mut().zip(col) {
            row[j] = v;
        }
    }
    // (G g) Gᵀ: 6x6, row by row
    let mut u = [0f32; 36];
    for (i, row) in gg.into_iter().enumerate() {
        for (j, v) in g_col(row).into_iter().enumerate() {
            u[6 * i + j] = v as f32;
        }
    }
    u
}

/// `n` equal, consecutive parts of `buf` of `len` elements each.
fn parts_mut<const N: usize>(buf: &mut [f32], len: usize) -> [&mut [f32]; N] {
    let mut it = buf.chunks_exact_mut(len);
    std::array::from_fn(|_| it.next().expect("buffer holds N parts"))
}

/// `Bᵀ d B` of channel `c`'s patches for tile rows `r0..r1`, into
/// `v[k * k_stride + c * tc + t]` (k = 6 * row + column, t: the tile's index from the start of
/// row r0).
///
/// Per tile row: `Bᵀ` over the six input rows, on whole rows (padded by one zero on the left
/// and zeros past the end, to `4 tw + 4`); then, with the transformed row split into its four
/// phases `p_q[t] = row[4t + q]`, the patch of tile t spans padded columns `4t..4t+5`, so `B`
/// over its columns reads `p_0[t] .. p_3[t], p_0[t+1], p_1[t+1]`: contiguous in t.
pub(super) fn input_transform(
    x: &[f32],
    c: usize,
    g: &Tiles,
    (r0, r1): (usize, usize),
    v: &mut [f32],
    k_stride: usize,
) {
    let (tw, w, plane) = (g.tw, g.w, g.h * g.w);
    let tc = (r1 - r0) * tw;
    assert!(35 * k_stride + c * tc + tc <= v.len());
    let pw = 4 * (tw + 1);
    // the six transformed rows, each padded: [6][pw] (the padding is never written)
    let mut rows = vec![0f32; 6 * pw];
    // the phases of one transformed row: [4][tw + 1]; the six columns' B of a row: [6][tw]
    let mut ph = vec![0f32; 4 * (tw + 1)];
    let mut cols = vec![0f32; 6 * tw];
    let zero = vec![0f32; w];
    for row in r0..r1 {
        let (img, ty) = (row / g.th, row % g.th);
        let base = &x[(c * g.n + img) * plane..][..plane];
        // input row 4 ty + r - 1, zero outside the image
        let src: [&[f32]; 6] = std::array::from_fn(|r| {
            let y = 4 * ty + r;
            if y == 0 || y > g.h {
                &zero[..]
            } else {
                &base[(y - 1) * w..][..w]
            }
        });
        {
            let [o0, o1, o2, o3, o4, o5] = parts_mut::<6>(&mut rows, pw).map(|o| &mut o[1..w + 1]);
            let [s0, s1, s2, s3, s4, s5] = src.map(|r| &r[..w]);
            for xx in 0..w {
                let b = bt([s0[xx], s1[xx], s2[xx], s3[xx], s4[xx], s5[xx]]);
                (o0[xx], o1[xx], o2[xx], o3[xx]) = (b[0], b[1], b[2], b[3]);
                (o4[xx], o5[xx]) = (b[4], b[5]);
            }
        }
        let col0 = c * tc + (row - r0) * tw;
        for i in 0..6 {
            let [p0, p1, p2, p3] = parts_mut::<4>(&mut ph, tw + 1);
            for (t, quad) in rows[i * pw..][..pw].chunks_exact(4).enumerate() {
                (p0[t], p1[t], p2[t], p3[t]) = (quad[0], quad[1], quad[2], quad[3]);
            }
            let (p2, p3) = (&p2[..tw], &p3[..tw]);
            let [c0, c1, c2, c3, c4, c5] = parts_mut::<6>(&mut cols, tw);
            for t in 0..tw {
                let b = bt([p0[t], p1[t], p2[t], p3[t], p0[t + 1], p1[t + 1]]);
                (c0[t], c1[t], c2[t], c3[t]) = (b[0], b[1], b[2], b[3]);
                (c4[t], c5[t]) = (b[4], b[5]);
            }
            for (j, cj) in cols.chunks_exact(tw).enumerate() {
                v[(6 * i + j) * k_stride + col0..][..tw].copy_from_slice(cj);
            }
        }
    }
}

/// `Aᵀ m A` of output channel `o` for tile rows `r0..r1` (`m[k * k_stride + o * tc + t]`),
/// finished by `ep` and written to `dst`'s plane `o`. Vectorised over the tiles of a row.
///
/// # Safety
/// `dst` holds `[c_out, n, h, w]`, and no other thread writes these rows of plane `o`.
pub(super) unsafe fn output_transform(
    m: &[f32],
    o: usize,
    k_stride: usize,
    g: &Tiles,
    (r0, r1): (usize, usize),
    dst: SharedMut,
    ep: Epilogue,
) {
    let tc = (r1 - r0) * g.tw;
    let (tw, plane) = (g.tw, g.h * g.w);
    let b = ep.bias[o];
    // Aᵀ over the rows: [6 columns][4 rows a][tw]; then one output row: [4 tw]
    let mut rr = vec![0f32; 24 * tw];
    let mut y = vec![0f32; 4 * tw];
    for row in r0..r1 {
        let (img, ty) = (row / g.th, row % g.th);
        let col0 = o * tc + (row - r0) * tw;
        for j in 0..6 {
            let at_k = |i: usize| &m[(6 * i + j) * k_stride + col0..][..tw];
            let [q0, q1, q2, q3, q4, q5]: [&[f32]; 6] = std::array::from_fn(at_k);
            let [a0, a1, a2, a3] = parts_mut::<4>(&mut rr[j * 4 * tw..][..4 * tw], tw);
            for t in 0..tw {
                let r = at([q0[t], q1[t], q2[t], q3[t], q4[t], q5[t]]);
                (a0[t], a1[t], a2[t], a3[t]) = (r[0], r[1], r[2], r[3]);
            }
        }
        for a in 0..4 {
            let yy = 4 * ty + a;
            if yy >= g.h {
                break;
            }
            let at_j = |j: usize| &rr[(4 * j + a) * tw..][..tw];
            let [p0, p1, p2, p3, p4, p5]: [&[f32]; 6] = std::array::from_fn(at_j);
            // A over the columns, interleaved into the output row
            for (t, quad) in y.chunks_exact_mut(4).take(tw).enumerate() {
                quad.copy_from_slice(&at([p0[t], p1[t], p2[t], p3[t], p4[t], p5[t]]));
            }
            let out = std::slice::from_raw_parts_mut(
                dst.get().add((o * g.n + img) * plane + yy * g.w),
                g.w,
            );
            store_row(out, &y[..g.w], b, ep);
        }
    }
}
