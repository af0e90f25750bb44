//! One-dimensional LOESS (Cleveland 1979): local weighted polynomial regression with tricube
//! weights over the `ceil(span * n)` nearest neighbours, evaluated directly at every point
//! (what `skmisc.loess(x, y, span, degree=2, surface="direct")` computes; scanpy's default
//! `surface="interpolate"` approximates this surface).

/// Fitted values of a degree-`degree` (1 or 2) LOESS of `y` on `x` at each `x`.
pub fn loess_fit(x: &[f64], y: &[f64], span: f64, degree: usize) -> Vec<f64> {
    let n = x.len();
    if n == 0 {
        return Vec::new();
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| x[a].total_cmp(&x[b]));
    let xs: Vec<f64> = order.iter().map(|&i| x[i]).collect();
    let ys: Vec<f64> = order.iter().map(|&i| y[i]).collect();
    // netlib loess: q = floor(n * span), at least degree + 1.
    let q = ((n as f64 * span).floor() as usize).clamp(degree + 1, n);
    let mut fitted_sorted = vec![0f64; n];
    let mut lo = 0usize; // window [lo, lo + q) of the q nearest neighbours
    for (k, &x0) in xs.iter().enumerate() {
        // Slide the window right while the point leaving is farther than the one entering.
        while lo + q < n && (xs[lo + q] - x0) < (x0 - xs[lo]) {
            lo += 1;
        }
        let hi = lo + q; // exclusive
        let mut h = (x0 - xs[lo]).max(xs[hi - 1] - x0);
        if span > 1.0 {
            h *= span; // netlib enlarges the bandwidth beyond the full range
        }
        fitted_sorted[k] = local_fit(&xs, &ys, lo, hi, x0, h, degree);
    }
    let mut fitted = vec![0f64; n];
    for (k, &i) in order.iter().enumerate() {
        fitted[i] = fitted_sorted[k];
    }
    fitted
}

fn local_fit(xs: &[f64], ys: &[f64], lo: usize, hi: usize, x0: f64, h: f64, degree: usize) -> f64 {
    // Weighted least squares on centred x (better conditioned); the fit at x0 is the intercept.
    let p = degree + 1;
    let mut ata = [[0f64; 3]; 3];
    let mut aty = [0f64; 3];
    for j in lo..hi {
        let d = xs[j] - x0;
        let w = if h > 0.0 {
            let u = (d.abs() / h).min(1.0);
            let t = 1.0 - u * u * u;
            t * t * t
        } else {
            1.0
        };
        if w == 0.0 {
            continue;
        }
        let basis = [1.0, d, d * d];
        for a in 0..p {
            aty[a] += w * basis[a] * ys[j];
            for b in 0..p {
                ata[a][b] += w * basis[a] * basis[b];
            }
        }
    }
    solve_intercept(ata, aty, p).unwrap_or_else(|| {
        // Degenerate neighbourhood (all x equal): fall back to the weighted mean.
        if ata[0][0] > 0.0 {
            aty[0] / ata[0][0]
        } else {
            0.0
        }
    })
}

/// Solves the p x p system (Gaussian elimination with partial pivoting) and returns the first
/// coefficient, or `None` when the system is singular.
fn solve_intercept(mut a: [[f64; 3]; 3], mut b: [f64; 3], p: usize) -> Option<f64> {
    let scale = (0..p).map(|i| a[i][i].abs()).fold(0.0, f64::max);
    for col in 0..p {
        let pivot = (col..p).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[pivot][col].abs() <= 1e-12 * scale.max(f64::MIN_POSITIVE) {
            return None;
        }
        a.swap(col, pivot);
        b.swap(col, pivot);
        for r in col + 1..p {
            let f = a[r][col] / a[col][col];
            for c in col..p {
                a[r][c] -= f * a[col][c];
            }
            b[r] -= f * b[col];
        }
    }
    let mut x = [0f64; 3];
    for r in (0..p).rev() {
        let s: f64 = (r + 1..p).map(|c| a[r][c] * x[c]).sum();
        x[r] = (b[r] - s) / a[r][r];
    }
    Some(x[0])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reproduces_a_quadratic_exactly() {
        let x: Vec<f64> = (0..50).map(|i| i as f64 / 7.0).collect();
        let y: Vec<f64> = x.iter().map(|v| 2.0 - 0.5 * v + 0.25 * v * v).collect();
        for (f, t) in loess_fit(&x, &y, 0.3, 2).iter().zip(&y) {
            assert!((f - t).abs() < 1e-9);
        }
    }
}
