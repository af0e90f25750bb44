//! `cargo xtask fixtures --from ../shared/datasets`: writes the small real subsets under
//! `fixtures/` that tests and the default `cargo xtask reproduce` use, each with its provenance.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use cellident_io::{ExpressionDataset, read_mtx_folder, write_10x_folder, write_mtx_folder};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

/// Seed of every subsample, recorded in the provenance notes.
pub const FIXTURE_SEED: u64 = 20261121;

/// One fixture: which shared dataset it comes from and how it is cut down.
struct Spec {
    name: &'static str,
    source: &'static str,
    /// Stratify the cell subsample by this obs column, keeping this many cells (None = all).
    cells: Option<(&'static str, usize)>,
    /// Keep the genes with the highest variance across the kept cells (None = all genes).
    top_variance_genes: Option<usize>,
    purpose: &'static str,
}

const SPECS: &[Spec] = &[
    Spec {
        name: "pbmc68k_reduced",
        source: "pbmc68k_reduced",
        cells: None,
        top_variance_genes: None,
        purpose: "annotation (bulk_labels), salient genes, clustering; log-normalised values; also the original .h5ad",
    },
    Spec {
        name: "pbmc3k_seurat",
        source: "pbmc3k_seurat",
        cells: Some(("classified", 1000)),
        top_variance_genes: None,
        purpose: "annotation (classified), salient genes; log-normalised values",
    },
    Spec {
        name: "pbmc_10x_4k_top2000",
        source: "pbmc_10x_4k_top2000",
        cells: Some(("label", 1000)),
        top_variance_genes: None,
        purpose: "annotation and clustering (label); raw UMI counts",
    },
    Spec {
        name: "baron_mouse",
        source: "baron_mouse",
        cells: Some(("cell_type", 600)),
        top_variance_genes: Some(4000),
        purpose: "annotation (cell_type), leave-one-donor-out; raw UMI counts",
    },
    Spec {
        name: "pollen_simlr",
        source: "pollen_simlr",
        cells: None,
        top_variance_genes: Some(2000),
        purpose: "clustering (label); log-transformed values",
    },
    Spec {
        name: "all_leukemia",
        source: "all_leukemia",
        cells: None,
        top_variance_genes: Some(2000),
        purpose: "bulk metadata prediction (BT, BT_lineage, sex, mol.biol, age) and CIC; RMA log2 intensities",
    },
    Spec {
        name: "bladderbatch",
        source: "bladderbatch",
        cells: None,
        top_variance_genes: Some(2000),
        purpose: "bulk metadata prediction (outcome, cancer), leave-one-batch-out; RMA log2 intensities",
    },
];

/// Stratified subsample: from each class of `labels`, `round(n_class * target / n)` cells (at
/// least one), chosen by a seeded shuffle; returned in the original order.
pub fn stratified_subsample(labels: &[Option<String>], target: usize, seed: u64) -> Vec<usize> {
    let n = labels.len();
    if target >= n {
        return (0..n).collect();
    }
    let mut by_class: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, l) in labels.iter().enumerate() {
        by_class
            .entry(l.as_deref().unwrap_or(""))
            .or_default()
            .push(i);
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let mut keep = Vec::with_capacity(target);
    for members in by_class.values_mut() {
        let k = ((members.len() * target) as f64 / n as f64)
            .round()
            .max(1.0) as usize;
        members.shuffle(&mut rng);
        keep.extend(members.iter().take(k.min(members.len())).copied());
    }
    keep.sort_unstable();
    keep
}

/// Indices of the `k` columns with the highest variance (ties: lower index first), in column order.
pub fn top_variance_columns(d: &ExpressionDataset, k: usize) -> Vec<usize> {
    let (_, var) = cellident_preprocess::gene_mean_var(d.matrix());
    let mut order: Vec<usize> = (0..var.len()).collect();
    order.sort_by(|&a, &b| var[b].total_cmp(&var[a]).then(a.cmp(&b)));
    order.truncate(k.min(order.len()));
    order.sort_unstable();
    order
}

pub fn run(from: &Path, out: &Path) -> Result<()> {
    if !from.is_dir() {
        bail!(
            "{} is not a folder of datasets (expected the ../shared/datasets layout)",
            from.display()
        );
    }
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut index = String::new();
    let _ = writeln!(index, "# Fixtures\n");
    let _ = writeln!(
        index,
        "Small real subsets of `../shared/datasets`, written by `cargo xtask fixtures --from ../shared/datasets`"
    );
    let _ = writeln!(
        index,
        "(seed {FIXTURE_SEED}). Tests and the default `cargo xtask reproduce` use only these files. Nothing here is synthetic.\n"
    );
    let _ = writeln!(
        index,
        "| fixture | source | cells | genes | non-zeros | how it was cut | used for |\n| --- | --- | --- | --- | --- | --- | --- |"
    );
    for spec in SPECS {
        let src = from.join(spec.source);
        let d = read_mtx_folder(&src).with_context(|| format!("cannot read {}", src.display()))?;
        let (d, how) = cut(&d, spec)?;
        let target = out.join(spec.name);
        remove_old(&target)?;
        let comment = format!(
            "cellident fixture '{}' from ../shared/datasets/{}: {how}; rows = cells, columns = genes",
            spec.name, spec.source
        );
        write_mtx_folder(&target, &d, &comment)?;
        write_readme(&target, spec, &d, &how, &src)?;
        let _ = writeln!(
            index,
            "| `{}` | `{}` | {} | {} | {} | {how} | {} |",
            spec.name,
            spec.source,
            d.n_cells(),
            d.n_genes(),
            d.matrix().nnz(),
            spec.purpose
        );
        copy_extras(&src, &target, spec.name)?;
        eprintln!(
            "wrote {} ({} cells x {} genes)",
            target.display(),
            d.n_cells(),
            d.n_genes()
        );
    }
    // A real 10x Genomics folder: the pbmc3k UMI counts of the pbmc3k_seurat fixture's cells,
    // written as Cell Ranger v3 writes them (genes x barcodes), with the obs table beside it.
    let tenx = write_tenx_fixture(from, out)?;
    let _ = writeln!(
        index,
        "| `pbmc3k_10x` | `pbmc3k_seurat` (`counts.mtx.gz`) | {} | {} | {} | the same {} cells as `pbmc3k_seurat`; integer UMI counts in the exact Cell Ranger v3 layout (`filtered_feature_bc_matrix/`: matrix.mtx.gz genes x barcodes, features.tsv.gz id/name/type, barcodes.tsv.gz) plus `obs.csv.gz` | 10x importer, `--obs` join, count-based models |",
        tenx.0, tenx.1, tenx.2, tenx.0
    );
    // A dense genes x cells TSV (the layout of many GEO supplementary files).
    let dense = write_dense_fixture(out)?;
    let _ = writeln!(
        index,
        "| `dense/pbmc68k_reduced_genes_by_cells.tsv.gz` | `pbmc68k_reduced` | {} | {} | - | first {} cells of the fixture, dense, genes as rows | CSV importer with `--transpose` |",
        dense.0, dense.1, dense.0
    );
    let _ = writeln!(
        index,
        "\n`pbmc68k_reduced/pbmc68k_reduced.h5ad` is the unchanged AnnData file shipped in the scanpy 1.11.5 wheel (legacy on-disk format)."
    );
    let _ = writeln!(
        index,
        "`all_leukemia/chrY_probes.csv` is copied unchanged. Each folder's README.md has the details."
    );
    std::fs::write(out.join("README.md"), index)?;
    Ok(())
}

fn remove_old(target: &Path) -> Result<()> {
    if target.exists() {
        std::fs::remove_dir_all(target)
            .with_context(|| format!("cannot remove old {}", target.display()))?;
    }
    Ok(())
}

fn cut(d: &ExpressionDataset, spec: &Spec) -> Result<(ExpressionDataset, String)> {
    let mut how = Vec::new();
    let d = match spec.cells {
        Some((column, target)) if target < d.n_cells() => {
            let labels = d.obs().labels(column)?;
            let rows = stratified_subsample(&labels, target, FIXTURE_SEED);
            how.push(format!(
                "{} of {} cells, stratified by `{column}` (seed {FIXTURE_SEED})",
                rows.len(),
                d.n_cells()
            ));
            d.select_cells(&rows)?
        }
        _ => {
            how.push(format!("all {} cells", d.n_cells()));
            d.clone()
        }
    };
    let d = match spec.top_variance_genes {
        Some(k) if k < d.n_genes() => {
            let cols = top_variance_columns(&d, k);
            how.push(format!("the {k} of {} genes with the highest variance across those cells (in source order)", d.n_genes()));
            d.select_genes(&cols)?
        }
        _ => {
            how.push(format!("all {} genes", d.n_genes()));
            d
        }
    };
    Ok((d, how.join("; ")))
}

fn write_readme(
    target: &Path,
    spec: &Spec,
    d: &ExpressionDataset,
    how: &str,
    src: &Path,
) -> Result<()> {
    let mut s = String::new();
    let _ = writeln!(s, "# Fixture `{}`\n", spec.name);
    let _ = writeln!(
        s,
        "Source: `../shared/datasets/{}` (see its README.md for the original data, citation and license).",
        spec.source
    );
    let _ = writeln!(s, "Subset: {how}. Values unchanged.\n");
    let _ = writeln!(
        s,
        "Made by: `cargo xtask fixtures --from ../shared/datasets` (seed {FIXTURE_SEED}).\n"
    );
    let _ = writeln!(s, "Used for: {}.\n", spec.purpose);
    let _ = writeln!(
        s,
        "Contents: {} cells x {} genes, {} non-zeros.\n",
        d.n_cells(),
        d.n_genes(),
        d.matrix().nnz()
    );
    for c in d.obs().columns() {
        if let Ok(counts) = d.obs().class_counts(&c.name)
            && counts.len() <= 20
        {
            {
                let parts: Vec<String> = counts
                    .iter()
                    .map(|(k, n)| format!("{}: {n}", k.as_deref().unwrap_or("(missing)")))
                    .collect();
                let _ = writeln!(s, "- `{}`: {}", c.name, parts.join(", "));
            }
        }
    }
    let _ = src;
    std::fs::write(target.join("README.md"), s)?;
    Ok(())
}

fn copy_extras(src: &Path, target: &Path, name: &str) -> Result<()> {
    for extra in ["pbmc68k_reduced.h5ad", "chrY_probes.csv"] {
        let p = src.join(extra);
        if p.is_file() {
            std::fs::copy(&p, target.join(extra))
                .with_context(|| format!("cannot copy {} into fixture {name}", p.display()))?;
        }
    }
    Ok(())
}

fn write_tenx_fixture(from: &Path, out: &Path) -> Result<(usize, usize, usize)> {
    let src = from.join("pbmc3k_seurat");
    let logs = read_mtx_folder(&src)?;
    // counts.mtx.gz has the layout and order of matrix.mtx.gz.
    let counts = cellident_io::read_matrix_market(
        &src.join("counts.mtx.gz"),
        cellident_io::MtxOrientation::CellsByGenes,
    )?;
    if !counts.all_integer {
        bail!(
            "{}/counts.mtx.gz is expected to hold integer counts",
            src.display()
        );
    }
    let (_, cells, genes, obs, var) = logs.into_parts();
    let d = ExpressionDataset::new(counts.matrix, cells, genes, obs, var)?;
    let labels = d.obs().labels("classified")?;
    let rows = stratified_subsample(&labels, 1000, FIXTURE_SEED);
    let d = d.select_cells(&rows)?;
    let root = out.join("pbmc3k_10x");
    remove_old(&root)?;
    std::fs::create_dir_all(&root)?;
    let comment = "cellident fixture pbmc3k_10x: pbmc3k UMI counts (../shared/datasets/pbmc3k_seurat/counts.mtx.gz) in Cell Ranger v3 layout; rows = genes, columns = barcodes";
    write_10x_folder(&root.join("filtered_feature_bc_matrix"), &d, None, comment)?;
    cellident_io::write_annotation_csv(&root.join("obs.csv.gz"), "cell", d.cell_ids(), d.obs())?;
    let mut s = String::new();
    let _ = writeln!(s, "# Fixture `pbmc3k_10x`\n");
    let _ = writeln!(
        s,
        "A 10x Genomics Cell Ranger v3 matrix folder made from real data: the integer UMI counts of"
    );
    let _ = writeln!(
        s,
        "`../shared/datasets/pbmc3k_seurat/counts.mtx.gz` (10x pbmc3k, 2000 variable genes) for the same {} cells",
        d.n_cells()
    );
    let _ = writeln!(
        s,
        "as the `pbmc3k_seurat` fixture (stratified by `classified`, seed {FIXTURE_SEED}).\n"
    );
    let _ = writeln!(
        s,
        "- `filtered_feature_bc_matrix/matrix.mtx.gz`: genes x barcodes, field integer (as Cell Ranger writes it)."
    );
    let _ = writeln!(
        s,
        "- `filtered_feature_bc_matrix/features.tsv.gz`: id, name, type. The shared copy carries gene symbols only, so the"
    );
    let _ = writeln!(
        s,
        "  id column repeats the symbol (real Cell Ranger output has Ensembl ids there); type is `Gene Expression`."
    );
    let _ = writeln!(
        s,
        "- `filtered_feature_bc_matrix/barcodes.tsv.gz`: one barcode per line."
    );
    let _ = writeln!(
        s,
        "- `obs.csv.gz`: the Seurat tutorial annotation, first column `cell` = barcode, for `cellident import --obs`."
    );
    std::fs::write(root.join("README.md"), s)?;
    eprintln!(
        "wrote {} ({} cells x {} genes)",
        root.display(),
        d.n_cells(),
        d.n_genes()
    );
    Ok((d.n_cells(), d.n_genes(), d.matrix().nnz()))
}

fn write_dense_fixture(out: &Path) -> Result<(usize, usize)> {
    let d = read_mtx_folder(&out.join("pbmc68k_reduced"))?;
    let n = 40.min(d.n_cells());
    let rows: Vec<usize> = (0..n).collect();
    let d = d.select_cells(&rows)?;
    let dir = out.join("dense");
    remove_old(&dir)?;
    std::fs::create_dir_all(&dir)?;
    let dense = d.matrix().to_dense();
    let path: PathBuf = dir.join("pbmc68k_reduced_genes_by_cells.tsv.gz");
    cellident_io::write_atomic(&path, |w| {
        write!(w, "gene")?;
        for c in d.cell_ids() {
            write!(w, "\t{c}")?;
        }
        writeln!(w)?;
        for (j, g) in d.gene_ids().iter().enumerate() {
            write!(w, "{g}")?;
            for i in 0..n {
                write!(w, "\t{}", dense[i * d.n_genes() + j])?;
            }
            writeln!(w)?;
        }
        Ok(())
    })?;
    cellident_io::write_annotation_csv(
        &dir.join("pbmc68k_reduced_obs.csv"),
        "cell",
        d.cell_ids(),
        d.obs(),
    )?;
    std::fs::write(
        dir.join("README.md"),
        format!(
            "# Fixture `dense`\n\n`pbmc68k_reduced_genes_by_cells.tsv.gz`: the first {n} cells of the `pbmc68k_reduced` fixture as a dense\n\
             tab-separated matrix with genes as rows and cells as columns (header: `gene`, then cell ids), values unchanged;\n\
             `pbmc68k_reduced_obs.csv`: their obs rows. Made by `cargo xtask fixtures`. Tests `cellident import --format csv --transpose`.\n"
        ),
    )?;
    Ok((n, d.n_genes()))
}
