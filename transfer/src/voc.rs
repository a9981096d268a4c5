//! Pascal VOC on disk: the devkit's `VOCdevkit/VOC<year>/{Annotations, JPEGImages,
//! ImageSets/Main}` layout, its 20 classes, split lists such as
//! `voc2007:trainval,voc2012:trainval`, and the results format of the evaluation server
//! (`comp4_det_test_<class>.txt`).
//!
//! Coordinates stay as the XML gives them: 1-based and pixel-inclusive (`xmax − xmin + 1`
//! pixels wide). [`VocObject::to_pixels`] turns them into the continuous 0-based
//! coordinates the detector works in, and [`from_pixels`] back.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::TransferError;

/// The 20 Pascal VOC classes, in the devkit's order (label 0 is `aeroplane`; the detector
/// adds the background class in front).
pub const VOC_CLASSES: [&str; 20] = [
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
];

/// One `year:split` part of a dataset (`voc2007:trainval`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitRef {
    /// `2007`, `2012`.
    pub year: String,
    /// `train`, `val`, `trainval`, `test`.
    pub split: String,
}

/// Parses `voc2007:trainval,voc2012:trainval`.
pub fn parse_splits(text: &str) -> Result<Vec<SplitRef>, TransferError> {
    let parts: Vec<SplitRef> = text
        .split(',')
        .map(|part| {
            let (set, split) = part.trim().split_once(':').ok_or_else(|| {
                TransferError::Config(format!(
                    "split `{part}`: expected vocYEAR:SPLIT, as voc2007:trainval"
                ))
            })?;
            let year = set
                .strip_prefix("voc")
                .filter(|y| y.len() == 4 && y.chars().all(|c| c.is_ascii_digit()));
            let Some(year) = year else {
                return Err(TransferError::Config(format!(
                    "split `{part}`: the set must be vocYEAR (voc2007, voc2012), not `{set}`"
                )));
            };
            if split.is_empty() || !split.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(TransferError::Config(format!(
                    "split `{part}`: `{split}` is not a split name"
                )));
            }
            Ok(SplitRef {
                year: year.to_string(),
                split: split.to_string(),
            })
        })
        .collect::<Result<_, _>>()?;
    if parts.is_empty() {
        return Err(TransferError::Config("no split given".into()));
    }
    Ok(parts)
}

/// One annotated object.
#[derive(Debug, Clone, PartialEq)]
pub struct VocObject {
    /// Index into [`VOC_CLASSES`].
    pub class: usize,
    /// `[xmin, ymin, xmax, ymax]` as in the XML: 1-based, pixel-inclusive.
    pub bbox: [f64; 4],
    /// Marked `difficult`.
    pub difficult: bool,
}

impl VocObject {
    /// The box in continuous 0-based pixel coordinates (`[xmin − 1, ymin − 1, xmax, ymax]`):
    /// what the detector trains on.
    pub fn to_pixels(&self) -> [f32; 4] {
        let [x1, y1, x2, y2] = self.bbox;
        [(x1 - 1.0) as f32, (y1 - 1.0) as f32, x2 as f32, y2 as f32]
    }
}

/// A continuous 0-based box back in the devkit's 1-based inclusive coordinates.
pub fn from_pixels(b: [f32; 4]) -> [f64; 4] {
    [
        b[0] as f64 + 1.0,
        b[1] as f64 + 1.0,
        b[2] as f64,
        b[3] as f64,
    ]
}

/// One image of a split with its objects.
#[derive(Debug, Clone, PartialEq)]
pub struct VocImage {
    /// The devkit's image id (`000005`).
    pub id: String,
    /// The JPEG.
    pub path: PathBuf,
    /// Width and height the annotation gives.
    pub size: (usize, usize),
    /// Its objects.
    pub objects: Vec<VocObject>,
}

/// The images of one or more splits.
#[derive(Debug, Clone, Default)]
pub struct VocDataset {
    /// In split-file order, split after split.
    pub images: Vec<VocImage>,
    /// What `strict = false` skipped, each naming the file and the reason.
    pub skipped: Vec<String>,
}

fn child<'a, 'i>(node: roxmltree::Node<'a, 'i>, name: &str) -> Option<roxmltree::Node<'a, 'i>> {
    node.children().find(|c| c.has_tag_name(name))
}

/// Parses one annotation file. Every problem is an error naming the file (and the object).
pub fn parse_annotation(path: &Path, text: &str) -> Result<(usize, usize, Vec<VocObject>), String> {
    let at = |what: String| format!("{}: {what}", path.display());
    let doc = roxmltree::Document::parse(text).map_err(|e| at(format!("malformed XML: {e}")))?;
    let root = doc.root_element();
    let text_of = |node: roxmltree::Node, name: &str, line: u32| -> Result<String, String> {
        child(node, name)
            .and_then(|c| c.text())
            .map(|t| t.trim().to_string())
            .ok_or_else(|| {
                at(format!(
                    "line {line}: <{}> has no <{name}>",
                    node.tag_name().name()
                ))
            })
    };
    let line = |node: roxmltree::Node| doc.text_pos_at(node.range().start).row;
    let size = child(root, "size").ok_or_else(|| at("no <size>".into()))?;
    let dim = |name: &str| -> Result<usize, String> {
        let t = text_of(size, name, line(size))?;
        t.parse::<usize>().ok().filter(|&v| v > 0).ok_or_else(|| {
            at(format!(
                "line {}: <{name}> is `{t}`, not a positive integer",
                line(size)
            ))
        })
    };
    let (width, height) = (dim("width")?, dim("height")?);
    let mut objects = Vec::new();
    for (k, obj) in root
        .children()
        .filter(|c| c.has_tag_name("object"))
        .enumerate()
    {
        let l = line(obj);
        let name = text_of(obj, "name", l)?;
        let class = VOC_CLASSES.iter().position(|c| *c == name).ok_or_else(|| {
            at(format!(
                "line {l}: object {k} has the unknown class `{name}` (VOC has {})",
                VOC_CLASSES.join(", ")
            ))
        })?;
        let difficult = match child(obj, "difficult")
            .and_then(|d| d.text())
            .map(str::trim)
        {
            None | Some("0") => false,
            Some("1") => true,
            Some(other) => {
                return Err(at(format!(
                    "line {l}: object {k}: <difficult> is `{other}`, not 0 or 1"
                )))
            }
        };
        let bnd = child(obj, "bndbox")
            .ok_or_else(|| at(format!("line {l}: object {k} has no <bndbox>")))?;
        let mut bbox = [0.0; 4];
        for (v, name) in bbox.iter_mut().zip(["xmin", "ymin", "xmax", "ymax"]) {
            let t = text_of(bnd, name, line(bnd))?;
            *v = t
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| {
                    at(format!(
                        "line {}: object {k}: <{name}> is `{t}`, not a number",
                        line(bnd)
                    ))
                })?;
        }
        let [x1, y1, x2, y2] = bbox;
        if x2 < x1 || y2 < y1 {
            return Err(at(format!(
                "line {l}: object {k} ({name}) has xmax < xmin or ymax < ymin: {bbox:?}"
            )));
        }
        if x1 < 1.0 || y1 < 1.0 || x2 > width as f64 || y2 > height as f64 {
            return Err(at(format!(
                "line {l}: object {k} ({name}) box {bbox:?} lies outside the {width}x{height} image (coordinates are 1-based)"
            )));
        }
        objects.push(VocObject {
            class,
            bbox,
            difficult,
        });
    }
    Ok((width, height, objects))
}

impl VocDataset {
    /// Reads `splits` under `root` (a `VOCdevkit` folder). A missing split file or folder is
    /// always an error; a malformed annotation or a missing image is an error when `strict`,
    /// skipped and reported otherwise.
    pub fn open(root: &Path, splits: &[SplitRef], strict: bool) -> Result<Self, TransferError> {
        let mut out = VocDataset::default();
        for s in splits {
            let base = root.join(format!("VOC{}", s.year));
            let list = base.join("ImageSets/Main").join(format!("{}.txt", s.split));
            let ids = std::fs::read_to_string(&list).map_err(|e| {
                TransferError::data(
                    &list,
                    format!(
                        "the split file of voc{}:{} cannot be read: {e}",
                        s.year, s.split
                    ),
                )
            })?;
            for id in ids.lines().map(str::trim).filter(|l| !l.is_empty()) {
                let xml = base.join("Annotations").join(format!("{id}.xml"));
                let jpg = base.join("JPEGImages").join(format!("{id}.jpg"));
                let read = std::fs::read_to_string(&xml)
                    .map_err(|e| format!("{}: {e}", xml.display()))
                    .and_then(|text| parse_annotation(&xml, &text))
                    .and_then(|parsed| {
                        if jpg.is_file() {
                            Ok(parsed)
                        } else {
                            Err(format!(
                                "{}: the image of {} is missing",
                                jpg.display(),
                                xml.display()
                            ))
                        }
                    });
                match read {
                    Ok((w, h, objects)) => out.images.push(VocImage {
                        id: id.to_string(),
                        path: jpg,
                        size: (w, h),
                        objects,
                    }),
                    Err(message) if strict => return Err(TransferError::Data(message)),
                    Err(message) => out.skipped.push(message),
                }
            }
        }
        if out.images.is_empty() {
            return Err(TransferError::data(
                root,
                "the splits hold no readable image",
            ));
        }
        Ok(out)
    }

    /// The ground truth as the metric takes it.
    pub fn ground_truth(&self) -> Vec<Vec<eval::voc::Object>> {
        self.images
            .iter()
            .map(|img| {
                img.objects
                    .iter()
                    .map(|o| eval::voc::Object {
                        class: o.class,
                        bbox: o.bbox,
                        difficult: o.difficult,
                    })
                    .collect()
            })
            .collect()
    }
}

/// The results file of `class` in `dir` (`comp4_det_test_<class>.txt`).
pub fn results_path(dir: &Path, class: &str) -> PathBuf {
    dir.join(format!("comp4_det_test_{class}.txt"))
}

/// Writes detections in the devkit's results format, one file per class (every class gets
/// a file, empty if it has no detection): lines `image_id score xmin ymin xmax ymax`, 1-based
/// inclusive coordinates. Files are written atomically.
pub fn write_results(
    dir: &Path,
    ids: &[String],
    detections: &[eval::voc::Detection],
) -> Result<(), TransferError> {
    std::fs::create_dir_all(dir).map_err(|e| TransferError::data(dir, e))?;
    let mut per_class: BTreeMap<usize, String> =
        (0..VOC_CLASSES.len()).map(|c| (c, String::new())).collect();
    for d in detections {
        let text = per_class.get_mut(&d.class).expect("class in range");
        let [x1, y1, x2, y2] = d.bbox;
        let _ = writeln!(
            text,
            "{} {:.6} {x1:.1} {y1:.1} {x2:.1} {y2:.1}",
            ids[d.image], d.score
        );
    }
    for (class, text) in per_class {
        let path = results_path(dir, VOC_CLASSES[class]);
        zoo::atomic::write(&path, text.as_bytes()).map_err(|e| TransferError::data(&path, e))?;
    }
    Ok(())
}

/// Reads the results files of every class from `dir` for the images `ids`. A missing class
/// file means no detections of that class; a malformed line or an unknown image id is an
/// error naming file and line.
pub fn read_results(
    dir: &Path,
    ids: &[String],
) -> Result<Vec<eval::voc::Detection>, TransferError> {
    if !dir.is_dir() {
        return Err(TransferError::data(
            dir,
            "is not a folder of comp4_det_test_<class>.txt files",
        ));
    }
    let index: BTreeMap<&str, usize> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), i))
        .collect();
    let mut out = Vec::new();
    let mut found = 0;
    for (class, name) in VOC_CLASSES.iter().enumerate() {
        let path = results_path(dir, name);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(TransferError::data(&path, e)),
        };
        found += 1;
        for (n, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let bad =
                |why: &str| TransferError::data(&path, format!("line {}: {why}: `{line}`", n + 1));
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() != 6 {
                return Err(bad("expected `image_id score xmin ymin xmax ymax`"));
            }
            let image = *index
                .get(fields[0])
                .ok_or_else(|| bad("the image id is not in the split"))?;
            let nums: Vec<f64> = fields[1..]
                .iter()
                .map(|f| f.parse::<f64>().ok().filter(|v| v.is_finite()))
                .collect::<Option<_>>()
                .ok_or_else(|| bad("a field is not a finite number"))?;
            if nums[3] < nums[1] || nums[4] < nums[2] {
                return Err(bad("xmax < xmin or ymax < ymin"));
            }
            out.push(eval::voc::Detection {
                image,
                class,
                score: nums[0],
                bbox: [nums[1], nums[2], nums[3], nums[4]],
            });
        }
    }
    if found == 0 {
        return Err(TransferError::data(
            dir,
            "holds no comp4_det_test_<class>.txt file",
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"<annotation>
  <filename>000001.jpg</filename>
  <size><width>60</width><height>40</height><depth>3</depth></size>
  <object><name>dog</name><difficult>0</difficult>
    <bndbox><xmin>1</xmin><ymin>2</ymin><xmax>30</xmax><ymax>40</ymax></bndbox></object>
  <object><name>cat</name><difficult>1</difficult>
    <bndbox><xmin>10</xmin><ymin>10</ymin><xmax>12</xmax><ymax>11</ymax></bndbox></object>
</annotation>"#;

    #[test]
    fn reads_an_annotation_with_one_based_inclusive_boxes() {
        let (w, h, objects) = parse_annotation(Path::new("a.xml"), GOOD).unwrap();
        assert_eq!((w, h), (60, 40));
        assert_eq!(objects.len(), 2);
        assert_eq!(objects[0].class, 11);
        assert_eq!(objects[0].to_pixels(), [0.0, 1.0, 30.0, 40.0]);
        assert_eq!(from_pixels(objects[0].to_pixels()), objects[0].bbox);
        assert!(objects[1].difficult);
    }

    #[test]
    fn every_bad_annotation_names_the_file_and_the_object() {
        let cases = [
            (GOOD.replace("</annotation>", ""), "malformed XML"),
            (GOOD.replace("dog", "wolf"), "unknown class `wolf`"),
            (
                GOOD.replace("<xmax>30</xmax>", "<xmax>0.5</xmax>"),
                "xmax < xmin",
            ),
            (
                GOOD.replace("<ymax>40</ymax>", "<ymax>41</ymax>"),
                "outside the 60x40 image",
            ),
            (GOOD.replace("<xmin>1</xmin>", "<xmin>0</xmin>"), "outside"),
            (
                GOOD.replace("<xmin>1</xmin>", "<xmin>one</xmin>"),
                "not a number",
            ),
            (
                GOOD.replace("<difficult>1</difficult>", "<difficult>yes</difficult>"),
                "not 0 or 1",
            ),
            (GOOD.replace("<width>60</width>", ""), "no <width>"),
            (
                GOOD.replacen("<bndbox>", "<box>", 1)
                    .replace("<ymax>40</ymax></bndbox>", "<ymax>40</ymax></box>"),
                "no <bndbox>",
            ),
        ];
        for (text, want) in cases {
            let err = parse_annotation(Path::new("x/000007.xml"), &text).unwrap_err();
            assert!(
                err.contains("000007.xml") && err.contains(want),
                "{want}: {err}"
            );
        }
    }

    #[test]
    fn split_lists_parse_and_bad_ones_are_refused() {
        let s = parse_splits("voc2007:trainval,voc2012:trainval").unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(
            s[1],
            SplitRef {
                year: "2012".into(),
                split: "trainval".into()
            }
        );
        for bad in [
            "voc2007",
            "coco:train",
            "voc07:test",
            "voc2007:",
            "voc2007:../x",
        ] {
            assert!(parse_splits(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn results_round_trip_and_bad_lines_name_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let ids = vec!["000001".to_string(), "000002".to_string()];
        let dets = vec![eval::voc::Detection {
            image: 1,
            class: 11,
            score: 0.5,
            bbox: [1.0, 2.0, 30.0, 40.0],
        }];
        write_results(dir.path(), &ids, &dets).unwrap();
        assert_eq!(read_results(dir.path(), &ids).unwrap(), dets);
        let dog = results_path(dir.path(), "dog");
        for (line, want) in [
            ("000001 0.5 1 2 3", "expected"),
            ("000009 0.5 1 2 3 4", "not in the split"),
            ("000001 high 1 2 3 4", "not a finite number"),
            ("000001 0.5 5 2 3 4", "xmax < xmin"),
        ] {
            std::fs::write(&dog, format!("000002 0.9 1 1 5 5\n{line}\n")).unwrap();
            let err = read_results(dir.path(), &ids).unwrap_err().to_string();
            assert!(
                err.contains("comp4_det_test_dog.txt")
                    && err.contains("line 2")
                    && err.contains(want),
                "{err}"
            );
        }
    }
}
