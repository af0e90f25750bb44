//! Maximum-weight bipartite matching (the Hungarian / Kuhn-Munkres algorithm, O(k^3)), as
//! `scipy.optimize.linear_sum_assignment(w, maximize=True)` solves it.

/// Given weights `[rows, cols]` (row-major), returns for each row its matched column (or
/// `None` when there are more rows than columns), maximising the total weight.
pub fn max_weight_assignment(weights: &[f64], rows: usize, cols: usize) -> Vec<Option<usize>> {
    let n = rows.max(cols);
    if n == 0 {
        return Vec::new();
    }
    let max = weights.iter().copied().fold(0.0f64, f64::max);
    // Minimise cost = max - weight on a square matrix padded with zero-weight cells.
    let cost = |i: usize, j: usize| -> f64 {
        if i < rows && j < cols {
            max - weights[i * cols + j]
        } else {
            max
        }
    };
    // Jonker-Volgenant style shortest augmenting paths with potentials (1-based internally).
    let inf = f64::INFINITY;
    let mut u = vec![0.0; n + 1];
    let mut v = vec![0.0; n + 1];
    let mut p = vec![0usize; n + 1]; // p[j] = row matched to column j
    let mut way = vec![0usize; n + 1];
    for i in 1..=n {
        p[0] = i;
        let mut j0 = 0usize;
        let mut minv = vec![inf; n + 1];
        let mut used = vec![false; n + 1];
        loop {
            used[j0] = true;
            let i0 = p[j0];
            let mut delta = inf;
            let mut j1 = 0usize;
            for j in 1..=n {
                if !used[j] {
                    let cur = cost(i0 - 1, j - 1) - u[i0] - v[j];
                    if cur < minv[j] {
                        minv[j] = cur;
                        way[j] = j0;
                    }
                    if minv[j] < delta {
                        delta = minv[j];
                        j1 = j;
                    }
                }
            }
            for j in 0..=n {
                if used[j] {
                    u[p[j]] += delta;
                    v[j] -= delta;
                } else {
                    minv[j] -= delta;
                }
            }
            j0 = j1;
            if p[j0] == 0 {
                break;
            }
        }
        loop {
            let j1 = way[j0];
            p[j0] = p[j1];
            j0 = j1;
            if j0 == 0 {
                break;
            }
        }
    }
    let mut assignment = vec![None; rows];
    for (j, &i) in p.iter().enumerate().skip(1) {
        if i >= 1 && i <= rows && j <= cols {
            assignment[i - 1] = Some(j - 1);
        }
    }
    assignment
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_optimum_of_a_small_problem() {
        // scipy.optimize.linear_sum_assignment([[4,1,3],[2,0,5],[3,2,2]], maximize=True)
        // -> rows [0,1,2], cols [0,2,1], total 11
        let w = [4.0, 1.0, 3.0, 2.0, 0.0, 5.0, 3.0, 2.0, 2.0];
        assert_eq!(
            max_weight_assignment(&w, 3, 3),
            vec![Some(0), Some(2), Some(1)]
        );
    }

    #[test]
    fn rectangular_problems_leave_rows_unmatched() {
        let w = [1.0, 9.0, 8.0, 2.0, 5.0, 5.0]; // 3 rows x 2 cols
        let a = max_weight_assignment(&w, 3, 2);
        let total: f64 = a
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.map(|c| w[i * 2 + c]))
            .sum();
        assert_eq!(total, 17.0);
        assert_eq!(a.iter().filter(|c| c.is_none()).count(), 1);
    }
}
