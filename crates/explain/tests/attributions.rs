//! Attribution methods checked against their defining properties on random networks and
//! inputs (seeded), and on trained models.

#![allow(clippy::unwrap_used)]

use candle_core::{Device, Tensor};
use cellident_explain::*;
use cellident_io::CsrMatrix;
use cellident_tensor::{
    Activation, DenseMatrix, DifferentiableClassifier, FeedForward, FeedForwardLayer,
    FeedForwardNet, mean_logits,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// A model made of given networks (their mean logits), usable by every method.
struct Nets(Vec<FeedForwardNet>);

impl FeedForward for Nets {
    fn networks(&self) -> cellident_tensor::Result<Vec<FeedForwardNet>> {
        Ok(self.0.clone())
    }
}

impl DifferentiableClassifier for Nets {
    fn logits(&self, x: &Tensor) -> cellident_tensor::Result<Tensor> {
        mean_logits(&self.0, x)
    }
}

fn normal(rng: &mut StdRng, n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|_| {
            // Sum of uniforms: close enough to a normal for test inputs.
            let s: f32 = (0..4).map(|_| rng.random_range(-1.0f32..1.0)).sum();
            s * scale * 0.87
        })
        .collect()
}

fn linear(rng: &mut StdRng, inp: usize, out: usize, bias: bool) -> FeedForwardLayer {
    let scale = (2.0 / inp as f32).sqrt();
    FeedForwardLayer::Linear {
        weight: Tensor::from_vec(normal(rng, out * inp, scale), (out, inp), &Device::Cpu).unwrap(),
        bias: bias.then(|| Tensor::from_vec(normal(rng, out, 0.3), out, &Device::Cpu).unwrap()),
    }
}

/// genes -> select 24 -> affine -> 16 -> act -> 8 -> act -> 3 classes.
fn random_net(rng: &mut StdRng, genes: usize, act: Activation) -> FeedForwardNet {
    let mut idx: Vec<u32> = (0..genes as u32).collect();
    for k in 0..genes {
        let j = rng.random_range(k..genes);
        idx.swap(k, j);
    }
    idx.truncate(24);
    let scale: Vec<f32> = (0..24).map(|_| rng.random_range(0.5f32..2.0)).collect();
    let shift = normal(rng, 24, 0.5);
    FeedForwardNet {
        layers: vec![
            FeedForwardLayer::Select {
                indices: Tensor::from_vec(idx, 24, &Device::Cpu).unwrap(),
                n_inputs: genes,
            },
            FeedForwardLayer::Affine {
                scale: Tensor::from_vec(scale, 24, &Device::Cpu).unwrap(),
                shift: Tensor::from_vec(shift, 24, &Device::Cpu).unwrap(),
            },
            linear(rng, 24, 16, true),
            FeedForwardLayer::Activation(act),
            linear(rng, 16, 8, true),
            FeedForwardLayer::Activation(act),
            linear(rng, 8, 3, true),
        ],
    }
}

fn random_input(rng: &mut StdRng, cells: usize, genes: usize) -> CsrMatrix {
    CsrMatrix::from_dense(cells, genes, &normal(rng, cells * genes, 1.5)).unwrap()
}

const ACTIVATIONS: [Activation; 6] = [
    Activation::Relu,
    Activation::LeakyRelu(0.01),
    Activation::Tanh,
    Activation::Sigmoid,
    Activation::LogSigmoid,
    Activation::Softplus,
];

/// Independent `logit_t(x) - logit_t(x0)` from the plain forward pass.
fn logit_deltas(model: &Nets, x: &CsrMatrix, x0: &[f32], targets: &[u32]) -> Vec<f64> {
    let d = Device::Cpu;
    let xt = Tensor::from_vec(x.to_dense(), (x.n_rows(), x.n_cols()), &d).unwrap();
    let x0t = Tensor::from_vec(x0.to_vec(), (1, x0.len()), &d).unwrap();
    let l = mean_logits(&model.0, &xt)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    let l0 = mean_logits(&model.0, &x0t)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    targets
        .iter()
        .enumerate()
        .map(|(i, &t)| l[i][t as usize] as f64 - l0[0][t as usize] as f64)
        .collect()
}

#[test]
fn deeplift_sums_to_delta_for_every_layer_type() {
    let genes = 40;
    for (a, act) in ACTIVATIONS.into_iter().enumerate() {
        let mut rng = StdRng::seed_from_u64(100 + a as u64);
        // An ensemble of two networks, to cover the averaging as well.
        let model = Nets(vec![
            random_net(&mut rng, genes, act),
            random_net(&mut rng, genes, act),
        ]);
        let x = random_input(&mut rng, 50, genes);
        let targets: Vec<u32> = (0..50).map(|i| (i % 3) as u32).collect();
        let profile = normal(&mut rng, genes, 0.7);
        for (reference, x0) in [
            (Reference::Zeros, vec![0f32; genes]),
            (Reference::Profile(profile.clone()), profile.clone()),
        ] {
            let r = deeplift(&model, &x, &targets, &reference, &Device::Cpu).unwrap();
            let expected = logit_deltas(&model, &x, &x0, &targets);
            for i in 0..50 {
                let sum: f64 = r.scores.row(i).iter().map(|&v| v as f64).sum();
                let tol = 1e-4 * expected[i].abs().max(1e-2);
                assert!(
                    (sum - expected[i]).abs() <= tol,
                    "{act:?} cell {i}: sum {sum} vs delta {}",
                    expected[i]
                );
                assert!((r.delta[i] as f64 - expected[i]).abs() <= tol);
            }
            // Genes the networks never read get exactly nothing.
            let read: std::collections::HashSet<u32> = model
                .0
                .iter()
                .flat_map(|n| match &n.layers[0] {
                    FeedForwardLayer::Select { indices, .. } => indices.to_vec1::<u32>().unwrap(),
                    _ => vec![],
                })
                .collect();
            for g in 0..genes as u32 {
                if !read.contains(&g) {
                    assert!((0..50).all(|i| r.scores.row(i)[g as usize] == 0.0));
                }
            }
        }
        // Several references: the mean of the per-reference deltas.
        let refs = DenseMatrix::new(2, genes, normal(&mut rng, 2 * genes, 0.7)).unwrap();
        let r = deeplift(
            &model,
            &x,
            &targets,
            &Reference::Profiles(refs.clone()),
            &Device::Cpu,
        )
        .unwrap();
        let d0 = logit_deltas(&model, &x, refs.row(0), &targets);
        let d1 = logit_deltas(&model, &x, refs.row(1), &targets);
        for i in 0..50 {
            let sum: f64 = r.scores.row(i).iter().map(|&v| v as f64).sum();
            let expected = 0.5 * (d0[i] + d1[i]);
            assert!(
                (sum - expected).abs() <= 1e-4 * expected.abs().max(1e-2),
                "{act:?} two references, cell {i}"
            );
        }
    }
}

#[test]
fn deeplift_with_a_zero_reference_is_gradient_x_input_on_a_bias_free_relu_network() {
    let mut rng = StdRng::seed_from_u64(7);
    let genes = 30;
    let model = Nets(vec![FeedForwardNet {
        layers: vec![
            linear(&mut rng, genes, 20, false),
            FeedForwardLayer::Activation(Activation::Relu),
            linear(&mut rng, 20, 10, false),
            FeedForwardLayer::Activation(Activation::Relu),
            linear(&mut rng, 10, 4, false),
        ],
    }]);
    let x = random_input(&mut rng, 40, genes);
    let targets: Vec<u32> = (0..40).map(|i| (i % 4) as u32).collect();
    let dl = deeplift(&model, &x, &targets, &Reference::Zeros, &Device::Cpu).unwrap();
    let gxi = gradient_x_input(&model, &x, &targets, &Device::Cpu).unwrap();
    for (a, b) in dl.scores.values.iter().zip(&gxi.scores.values) {
        assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{a} vs {b}");
    }
    // A biased network breaks the identity (the bias shifts the reference's activations).
    let biased = Nets(vec![FeedForwardNet {
        layers: vec![
            linear(&mut rng, genes, 20, true),
            FeedForwardLayer::Activation(Activation::Relu),
            linear(&mut rng, 20, 4, true),
        ],
    }]);
    let dl = deeplift(&biased, &x, &targets, &Reference::Zeros, &Device::Cpu).unwrap();
    let gxi = gradient_x_input(&biased, &x, &targets, &Device::Cpu).unwrap();
    let max_diff = dl
        .scores
        .values
        .iter()
        .zip(&gxi.scores.values)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(max_diff > 1e-3, "{max_diff}");
}

#[test]
fn integrated_gradients_converge_to_completeness_as_steps_grow() {
    let mut rng = StdRng::seed_from_u64(11);
    let genes = 40;
    let model = Nets(vec![random_net(&mut rng, genes, Activation::Tanh)]);
    let x = random_input(&mut rng, 30, genes);
    let targets: Vec<u32> = (0..30).map(|i| (i % 3) as u32).collect();
    let profile = normal(&mut rng, genes, 0.5);
    let reference = Reference::Profile(profile.clone());
    let expected = logit_deltas(&model, &x, &profile, &targets);
    let mut errors = Vec::new();
    for steps in [2, 8, 32, 128] {
        let ig =
            integrated_gradients(&model, &x, &targets, &reference, steps, &Device::Cpu).unwrap();
        let err: f64 = (0..30)
            .map(|i| {
                let sum: f64 = ig.scores.row(i).iter().map(|&v| v as f64).sum();
                assert!((ig.delta[i] as f64 - expected[i]).abs() < 1e-4);
                (sum - expected[i]).abs()
            })
            .sum::<f64>()
            / 30.0;
        errors.push(err);
    }
    // The trapezoid rule's error falls roughly 16x per 4x steps; allow for f32 noise at the end.
    assert!(errors[1] < errors[0] / 4.0, "{errors:?}");
    assert!(errors[2] < errors[1] / 4.0, "{errors:?}");
    assert!(errors[3] < 1e-3, "{errors:?}");
    // And DeepLIFT, which is exact in one pass, agrees with converged IG in ranking the genes.
    let dl = deeplift(&model, &x, &targets, &reference, &Device::Cpu).unwrap();
    let ig = integrated_gradients(&model, &x, &targets, &reference, 128, &Device::Cpu).unwrap();
    let corr = pearson(&dl.scores.values, &ig.scores.values);
    assert!(corr > 0.9, "{corr}");
}

fn pearson(a: &[f32], b: &[f32]) -> f64 {
    let n = a.len() as f64;
    let ma = a.iter().map(|&v| v as f64).sum::<f64>() / n;
    let mb = b.iter().map(|&v| v as f64).sum::<f64>() / n;
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (&x, &y) in a.iter().zip(b) {
        let (dx, dy) = (x as f64 - ma, y as f64 - mb);
        sab += dx * dy;
        saa += dx * dx;
        sbb += dy * dy;
    }
    sab / (saa * sbb).sqrt()
}

#[test]
fn rankings_average_per_class_and_order_by_score() {
    // Two classes, three genes; class 0 = rows 0 and 2.
    let scores =
        DenseMatrix::new(3, 3, vec![1.0, -4.0, 2.0, 9.0, 9.0, 9.0, 3.0, 0.0, -2.0]).unwrap();
    let classes = vec!["a".to_string(), "b".to_string()];
    let genes = vec!["g1".to_string(), "g2".to_string(), "g3".to_string()];
    let signed = rank_genes(&scores, &[0, 1, 0], &classes, &genes, 2, Ranking::Signed).unwrap();
    // Class a means: g1 = 2, g2 = -2, g3 = 0 -> g1, g3. Class b: all 9 -> g1, g2 (gene order).
    let got: Vec<(&str, usize, &str, f64)> = signed
        .iter()
        .map(|r| (r.class.as_str(), r.rank, r.gene.as_str(), r.score))
        .collect();
    assert_eq!(
        got,
        vec![
            ("a", 1, "g1", 2.0),
            ("a", 2, "g3", 0.0),
            ("b", 1, "g1", 9.0),
            ("b", 2, "g2", 9.0)
        ]
    );
    let abs = rank_genes(&scores, &[0, 1, 0], &classes, &genes, 1, Ranking::Absolute).unwrap();
    assert_eq!((abs[0].gene.as_str(), abs[0].score), ("g1", 2.0));
    let csv = rankings_csv(&signed);
    assert!(
        csv.starts_with("class,rank,gene,score\na,1,g1,2.000000e0\n"),
        "{csv}"
    );
}

#[test]
fn mismatched_inputs_are_refused_with_a_named_parameter() {
    let mut rng = StdRng::seed_from_u64(1);
    let model = Nets(vec![random_net(&mut rng, 40, Activation::Relu)]);
    let x = random_input(&mut rng, 5, 40);
    let e = deeplift(&model, &x, &[0, 1], &Reference::Zeros, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(e.contains("targets"), "{e}");
    let e = deeplift(
        &model,
        &x,
        &[0; 5],
        &Reference::Profile(vec![0.0; 3]),
        &Device::Cpu,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("reference") && e.contains("40 genes"), "{e}");
    let e = deeplift(&model, &x, &[7; 5], &Reference::Zeros, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(e.contains("target class"), "{e}");
}

#[test]
fn integrated_gradients_explain_the_nact_attention_model() {
    use cellident_nact::{Nact, NactParams};
    use cellident_tensor::{CheckParams, Classifier};
    // A short N-ACT fit on real cells: attention, projection blocks and LayerNorm all lie on
    // the path, and completeness still holds as the steps grow.
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/pbmc68k_reduced");
    let d = cellident_io::read_mtx_folder(&dir).unwrap();
    let labels = d.obs().labels("bulk_labels").unwrap();
    let enc = cellident_preprocess::LabelEncoder::fit(&labels).unwrap();
    let y: Vec<u32> = enc
        .transform(&labels)
        .into_iter()
        .map(|c| c.unwrap())
        .collect();
    let rows: Vec<usize> = (0..200).collect();
    let x = d.matrix().select_rows(&rows);
    // The released recipe's single learning rate, raised so that two epochs move the model; the
    // default's attention at 30x that rate (3e-2) would make the path far less smooth than any
    // trained model's.
    let params = NactParams {
        epochs: 2,
        lr: 1e-3,
        ..NactParams::reference()
    };
    let mut model = Nact::new(params.check().unwrap(), Device::Cpu);
    model.fit_quiet(&x, &y[..200], enc.classes.len()).unwrap();
    let cells = x.select_rows(&[0, 1, 2, 3, 4, 5]);
    let targets = model.predict(&cells).unwrap();
    let mean = Reference::mean_of(&x);
    let errs: Vec<f64> = [4, 64]
        .iter()
        .map(|&steps| {
            let ig =
                integrated_gradients(&model, &cells, &targets, &mean, steps, &Device::Cpu).unwrap();
            (0..6)
                .map(|i| {
                    let s: f64 = ig.scores.row(i).iter().map(|&v| v as f64).sum();
                    (s - ig.delta[i] as f64).abs() / (ig.delta[i] as f64).abs().max(1e-2)
                })
                .fold(0f64, f64::max)
        })
        .collect();
    assert!(errs[1] < 0.02, "{errs:?}");
    assert!(errs[1] < errs[0], "{errs:?}");
    let gxi = gradient_x_input(&model, &cells, &targets, &Device::Cpu).unwrap();
    assert!(gxi.scores.values.iter().all(|v| v.is_finite()));
}
