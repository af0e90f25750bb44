//! Limited-memory BFGS (Nocedal & Wright, Algorithm 7.4) with a backtracking Armijo line search,
//! for smooth convex objectives.

/// Minimises `f` from `x0`. `f(x)` returns the value and fills the gradient. Stops when the
/// largest gradient component is below `tol` or after `max_iter` iterations. Returns the minimiser
/// and the number of iterations.
pub fn minimize<E>(
    mut f: impl FnMut(&[f64], &mut [f64]) -> Result<f64, E>,
    x0: Vec<f64>,
    memory: usize,
    max_iter: usize,
    tol: f64,
) -> Result<(Vec<f64>, usize), E> {
    let n = x0.len();
    let mut x = x0;
    let mut g = vec![0.0; n];
    let mut fx = f(&x, &mut g)?;
    let mut s_hist: Vec<Vec<f64>> = Vec::new();
    let mut y_hist: Vec<Vec<f64>> = Vec::new();
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    let mut iterations = 0;
    for it in 0..max_iter {
        iterations = it + 1;
        if g.iter().fold(0f64, |m, v| m.max(v.abs())) < tol {
            break;
        }
        // Two-loop recursion: d = -H g.
        let mut q = g.clone();
        let mut alpha = vec![0.0; s_hist.len()];
        for i in (0..s_hist.len()).rev() {
            let rho = 1.0 / dot(&y_hist[i], &s_hist[i]);
            alpha[i] = rho * dot(&s_hist[i], &q);
            for (qj, yj) in q.iter_mut().zip(&y_hist[i]) {
                *qj -= alpha[i] * yj;
            }
        }
        if let (Some(s), Some(y)) = (s_hist.last(), y_hist.last()) {
            let gamma = dot(s, y) / dot(y, y);
            q.iter_mut().for_each(|v| *v *= gamma);
        }
        for i in 0..s_hist.len() {
            let rho = 1.0 / dot(&y_hist[i], &s_hist[i]);
            let beta = rho * dot(&y_hist[i], &q);
            for (qj, sj) in q.iter_mut().zip(&s_hist[i]) {
                *qj += (alpha[i] - beta) * sj;
            }
        }
        let mut d: Vec<f64> = q.iter().map(|v| -v).collect();
        let mut slope = dot(&g, &d);
        if slope >= 0.0 {
            // Not a descent direction (numerical trouble): restart from steepest descent.
            s_hist.clear();
            y_hist.clear();
            d = g.iter().map(|v| -v).collect();
            slope = dot(&g, &d);
        }
        // Backtracking line search (Armijo, c = 1e-4).
        let mut step = if s_hist.is_empty() {
            1.0 / g.iter().map(|v| v * v).sum::<f64>().sqrt().max(1.0)
        } else {
            1.0
        };
        let mut x_new = vec![0.0; n];
        let mut g_new = vec![0.0; n];
        let mut f_new;
        loop {
            for j in 0..n {
                x_new[j] = x[j] + step * d[j];
            }
            f_new = f(&x_new, &mut g_new)?;
            if f_new <= fx + 1e-4 * step * slope || step < 1e-12 {
                break;
            }
            step *= 0.5;
        }
        let s: Vec<f64> = (0..n).map(|j| x_new[j] - x[j]).collect();
        let y: Vec<f64> = (0..n).map(|j| g_new[j] - g[j]).collect();
        if dot(&s, &y) > 1e-12 {
            s_hist.push(s);
            y_hist.push(y);
            if s_hist.len() > memory {
                s_hist.remove(0);
                y_hist.remove(0);
            }
        }
        let converged = (fx - f_new).abs() <= 1e-12 * fx.abs().max(1.0);
        x = x_new.clone();
        g = g_new.clone();
        fx = f_new;
        if converged {
            break;
        }
    }
    Ok((x, iterations))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimises_a_rosenbrock_valley() {
        let f = |x: &[f64], g: &mut [f64]| -> Result<f64, ()> {
            let (a, b) = (x[0], x[1]);
            g[0] = -2.0 * (1.0 - a) - 400.0 * a * (b - a * a);
            g[1] = 200.0 * (b - a * a);
            Ok((1.0 - a).powi(2) + 100.0 * (b - a * a).powi(2))
        };
        let (x, _) = minimize(f, vec![-1.2, 1.0], 10, 500, 1e-8).unwrap();
        assert!(
            (x[0] - 1.0).abs() < 1e-4 && (x[1] - 1.0).abs() < 1e-4,
            "{x:?}"
        );
    }
}
