//! Canonical PBMC marker genes, to ask whether a salient-gene ranking means something
//! (issue #7): how many canonical markers present in the input appear in the top 25 of a
//! cell type they mark. Cell types are matched by name (the labels of pbmc68k_reduced and
//! pbmc3k_seurat); datasets without PBMC types are not scored.

use cellident_nact::GeneScore;

/// (lower-case name fragments of the cell types, the markers of those types). A marker counts
/// once, however many types it marks.
const PANEL: &[(&[&str], &[&str])] = &[
    (
        &["monocyte", "mono"],
        &["CD14", "LYZ", "FCN1", "S100A8", "FCGR3A"],
    ),
    (&["cd19+ b", "b cell"], &["CD79A", "CD79B", "MS4A1"]),
    (&["nk"], &["NKG7", "GNLY", "GZMB", "PRF1", "FCGR3A"]),
    (&["dendritic", "dc"], &["FCER1A", "CST3"]),
    (
        &[
            "t reg",
            "naive t",
            "memory",
            "cd4 t",
            "cd8 t",
            "cytotoxic t",
            "naive cytotoxic",
        ],
        &["CD3D", "CD3E", "IL7R", "CCR7"],
    ),
    (&["cd8"], &["CD8A", "CD8B", "NKG7", "GNLY", "GZMB"]),
];

fn marks(cell_type: &str, gene: &str) -> bool {
    let t = cell_type.to_ascii_lowercase();
    PANEL.iter().any(|(names, genes)| {
        genes.contains(&gene)
            && names.iter().any(|n| {
                if *n == "dc" || *n == "b cell" {
                    t == *n || t.split_whitespace().any(|w| w == *n) || (*n == "b cell" && t == "b")
                } else {
                    t.contains(n)
                }
            })
    })
}

/// `(markers present in the input, markers found in the top 25 of a type they mark)`, or
/// `None` when no cell type of the ranking is a PBMC type of the panel.
pub fn canonical_marker_hits(
    input_genes: &[String],
    ranking: &[GeneScore],
) -> Option<(usize, usize)> {
    let all: std::collections::BTreeSet<&str> =
        PANEL.iter().flat_map(|(_, g)| g.iter().copied()).collect();
    let present: Vec<&str> = all
        .iter()
        .copied()
        .filter(|g| input_genes.iter().any(|x| x == g))
        .collect();
    let pbmc_types = ranking.iter().any(|r| {
        PANEL
            .iter()
            .any(|(_, genes)| genes.iter().any(|g| marks(&r.cell_type, g)))
    });
    if !pbmc_types || present.is_empty() {
        return None;
    }
    let hits = present
        .iter()
        .filter(|g| {
            ranking
                .iter()
                .any(|r| r.rank <= 25 && r.gene == **g && marks(&r.cell_type, g))
        })
        .count();
    Some((present.len(), hits))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_are_matched_by_name() {
        assert!(marks("CD14+ Monocyte", "LYZ"));
        assert!(marks("FCGR3A+ Mono", "FCGR3A"));
        assert!(marks("CD19+ B", "MS4A1"));
        assert!(marks("B", "CD79A"));
        assert!(marks("CD8+ Cytotoxic T", "CD8A"));
        assert!(marks("CD8+ Cytotoxic T", "CD3D"));
        assert!(marks("DC", "FCER1A"));
        assert!(!marks("CD14+ Monocyte", "MS4A1"));
        assert!(!marks("CD34+", "CD3D"));
        let row = |t: &str, g: &str| GeneScore {
            cell_type: t.into(),
            rank: 1,
            gene: g.into(),
            score: 1.0,
        };
        let genes: Vec<String> = ["LYZ", "MS4A1", "CD3D"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let ranking = vec![row("CD14+ Monocyte", "LYZ"), row("CD14+ Monocyte", "MS4A1")];
        assert_eq!(canonical_marker_hits(&genes, &ranking), Some((3, 1)));
    }
}
