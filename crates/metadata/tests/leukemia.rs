//! The metadata MLP and its DeepLIFT explanation on the real all_leukemia fixture (128 bulk
//! samples x the 2000 most variable probes; fixtures/all_leukemia/README.md).

#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use candle_core::Device;
use cellident_explain::{Ranking, Reference, deeplift, rank_genes};
use cellident_io::{ExpressionDataset, read_mtx_folder};
use cellident_metadata::{MetadataMlp, MlpParams};
use cellident_preprocess::LabelEncoder;
use cellident_tensor::Classifier;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/all_leukemia")
}

fn labelled(d: &ExpressionDataset, column: &str) -> (ExpressionDataset, Vec<u32>, Vec<String>) {
    let labels = d.obs().labels(column).unwrap();
    let enc = LabelEncoder::fit(&labels).unwrap();
    let codes = enc.transform(&labels);
    let keep: Vec<usize> = (0..codes.len()).filter(|&i| codes[i].is_some()).collect();
    let y = keep.iter().map(|&i| codes[i].unwrap()).collect();
    (d.select_cells(&keep).unwrap(), y, enc.classes)
}

/// Male-specific chromosome-Y probes and XIST (38446_at), from the fixture's chrY_probes.csv.
fn sex_probes() -> HashSet<String> {
    let mut r = csv::Reader::from_path(fixture().join("chrY_probes.csv")).unwrap();
    let mut s: HashSet<String> = r
        .records()
        .map(|rec| rec.unwrap())
        .filter(|rec| &rec[3] == "male-specific")
        .map(|rec| rec[0].to_string())
        .collect();
    s.insert("38446_at".into());
    s
}

#[test]
fn deeplift_of_the_sex_classifier_ranks_sex_chromosome_probes_on_top() {
    let d = read_mtx_folder(&fixture()).unwrap();
    let (d, y, classes) = labelled(&d, "sex");
    assert_eq!(classes, ["F", "M"]);
    let mut model = MetadataMlp::new(MlpParams::default(), Device::Cpu).unwrap();
    model.fit_quiet(d.matrix(), &y, classes.len()).unwrap();
    // Reference: the training mean (the zero of the standardised input the network sees).
    let reference = Reference::mean_of(d.matrix());
    let a = deeplift(&model, d.matrix(), &y, &reference, &Device::Cpu).unwrap();
    // Summation-to-delta on a trained ensemble with gene selection in front.
    for i in 0..y.len() {
        let s: f64 = a.scores.row(i).iter().map(|&v| v as f64).sum();
        let delta = a.delta[i] as f64;
        assert!(
            (s - delta).abs() <= 1e-4 * delta.abs().max(1e-2),
            "{s} vs {delta}"
        );
    }
    // The 20 probes with the largest mean |contribution| over all samples (one "class").
    let all = vec!["all".to_string()];
    let top = rank_genes(
        &a.scores,
        &vec![0; y.len()],
        &all,
        d.gene_ids(),
        20,
        Ranking::Absolute,
    )
    .unwrap();
    let probes = sex_probes();
    let hits: Vec<&str> = top
        .iter()
        .filter(|r| probes.contains(&r.gene))
        .map(|r| r.gene.as_str())
        .collect();
    eprintln!("sex probes in the top 20: {hits:?}");
    assert!(hits.len() >= 3, "sex probes in the top 20: {hits:?}");

    // Checkpoint round trip: every member's genes, scaling and layers come back, so the
    // probabilities are bit-identical and DeepLIFT walks the same layers.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sex.safetensors");
    let genes = d.gene_ids().to_vec();
    model
        .save(
            &path,
            genes.clone(),
            classes.clone(),
            serde_json::Value::Null,
        )
        .unwrap();
    let (back, meta) = MetadataMlp::load(&path, &Device::Cpu).unwrap();
    assert_eq!((meta.genes, meta.labels), (genes, classes));
    assert_eq!(back.member_gene_counts(), model.member_gene_counts());
    assert_eq!(
        back.predict_proba(d.matrix()).unwrap().values,
        model.predict_proba(d.matrix()).unwrap().values
    );
    let b = deeplift(&back, d.matrix(), &y, &reference, &Device::Cpu).unwrap();
    assert_eq!(b.scores.values, a.scores.values);
}

#[test]
fn the_untrained_model_and_bad_parameters_give_clear_errors() {
    let m = MetadataMlp::new(MlpParams::default(), Device::Cpu).unwrap();
    let d = read_mtx_folder(&fixture()).unwrap();
    let e = m.predict(d.matrix()).unwrap_err().to_string();
    assert!(e.contains("not trained"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.safetensors");
    let e = m
        .save(
            &path,
            d.gene_ids().to_vec(),
            vec![],
            serde_json::Value::Null,
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("not trained"), "{e}");
    assert!(!path.exists(), "nothing is written for an untrained model");
    let e = MetadataMlp::new(
        MlpParams {
            dropout: 1.5,
            ..MlpParams::default()
        },
        Device::Cpu,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("dropout"), "{e}");
}

/// The MLP trained from a stream (a Parquet file of 16-sample row groups through a 48-sample
/// shuffle buffer) against the same recipe in memory, on `BT_lineage` (B vs T; anchors.md §C:
/// random forest 1.000, the reference MLP 0.984). One statistics pass gives the gene
/// selection and standardisation (the F-statistic from per-class moments equals the in-memory
/// one: preprocess tests), then each member trains on the stream.
#[test]
fn streamed_training_matches_in_memory_training() {
    use cellident_io::{ParquetDataset, ParquetWriteOptions, write_parquet};
    use cellident_preprocess::stream::{BatchTransform, ParquetBatchSource};
    use cellident_preprocess::{Pipeline, stratified_split};
    use cellident_tensor::{NoProgress, StreamingClassifier};

    let d = read_mtx_folder(&fixture()).unwrap();
    let (d, y, classes) = labelled(&d, "BT_lineage");
    let (train, test) = stratified_split(&y, 0.2, 0).unwrap();
    let xte = d.matrix().select_rows(&test);
    let yte: Vec<u32> = test.iter().map(|&i| y[i]).collect();
    let ytr: Vec<u32> = train.iter().map(|&i| y[i]).collect();
    // Streaming has no validation hold-out: one gene-set size, a fixed number of epochs.
    let params = MlpParams {
        validation_fraction: 0.0,
        select_genes: vec![500],
        ensemble: 3,
        max_epochs: 30,
        ..MlpParams::default()
    };
    let mut in_memory = MetadataMlp::new(params.clone(), Device::Cpu).unwrap();
    in_memory
        .fit_quiet(&d.matrix().select_rows(&train), &ytr, classes.len())
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("train.parquet");
    let options = ParquetWriteOptions {
        cells_per_row_group: 16,
        ..Default::default()
    };
    write_parquet(&path, &d.select_cells(&train).unwrap(), &options).unwrap();
    let file = ParquetDataset::open(&path).unwrap();
    let transform = BatchTransform::new(&Pipeline::default(), file.gene_ids(), 1.0).unwrap();
    let mut stream = ParquetBatchSource::new(file, transform, "BT_lineage", 48, 3).unwrap();
    let mut streamed = MetadataMlp::new(params.clone(), Device::Cpu).unwrap();
    let report = streamed
        .fit_source(&mut stream, classes.len(), &mut NoProgress)
        .unwrap();
    assert_eq!(report.epochs.len(), 3 * 30);
    assert_eq!(streamed.member_gene_counts(), vec![500; 3]);
    let acc =
        |m: &MetadataMlp| cellident_metrics::accuracy(&yte, &m.predict(&xte).unwrap()).unwrap();
    let (a_mem, a_stream) = (acc(&in_memory), acc(&streamed));
    eprintln!("BT_lineage test accuracy: in memory {a_mem:.3}, streamed {a_stream:.3}");
    assert!(a_mem >= 0.95 && a_stream >= 0.95, "{a_mem} / {a_stream}");

    // Early stopping needs a hold-out a stream does not have: refused, naming the parameter.
    let mut with_val = MetadataMlp::new(MlpParams::default(), Device::Cpu).unwrap();
    let err = with_val
        .fit_source(&mut stream, classes.len(), &mut NoProgress)
        .unwrap_err();
    assert!(err.to_string().contains("validation_fraction"), "{err}");
}
