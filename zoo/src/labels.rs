//! Class names: ImageNet-1k's, shipped with the binary.

/// WordNet id and lemmas of the 1000 ImageNet-1k classes, one per line in output order
/// (`n01440764<TAB>tench, Tinca tinca`), as timm lists them.
const IMAGENET: &str = include_str!("../data/imagenet_classes.txt");

/// The 1000 ImageNet-1k class names in output order (the lemmas, `tench, Tinca tinca`).
pub fn imagenet() -> Vec<&'static str> {
    IMAGENET
        .lines()
        .map(|l| l.split_once('\t').map_or(l, |(_, lemma)| lemma))
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn imagenet_has_1000_classes_in_timm_order() {
        let names = super::imagenet();
        assert_eq!(names.len(), 1000);
        assert_eq!(names[0], "tench, Tinca tinca");
        assert_eq!(names[1], "goldfish, Carassius auratus");
        assert!(names[999].starts_with("toilet tissue"));
    }
}
