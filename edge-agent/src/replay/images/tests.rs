//! Unit tests of `replay::images`.

use super::*;

fn fire() -> Fire {
    toml::from_str("path = \"x.onnx\"").unwrap()
}

/// YOLO labels beside `images/`, class names from `data.yaml`,
/// unmapped classes dropped, a missing label file a negative, and a bad
/// line named with its file and line.
#[test]
fn yolo_folders_and_lists_load() {
    let dir = tempfile::tempdir().unwrap();
    let split = dir.path().join("valid");
    std::fs::create_dir_all(split.join("images")).unwrap();
    std::fs::create_dir_all(split.join("labels")).unwrap();
    std::fs::write(dir.path().join("data.yaml"), "nc: 3\nnames: ['Fire', 'default', 'smoke']\n").unwrap();
    for n in ["a", "b", "c"] {
        std::fs::write(split.join("images").join(format!("{n}.jpg")), b"").unwrap();
    }
    std::fs::write(split.join("labels/a.txt"), "0 0.5 0.5 0.2 0.2\n1 0.5 0.5 1 1\n2 0.2 0.2 0.1 0.1\n").unwrap();
    std::fs::write(split.join("labels/b.txt"), "1 0.5 0.5 1 1\n").unwrap();
    let opts = ImageEvalOptions { names: None, top: 5 };
    let set = load_set(dir.path(), &opts, &fire()).unwrap();
    assert_eq!(set.len(), 3);
    let kinds: Vec<Vec<FireKind>> = set.iter().map(|i| i.boxes.iter().map(|b| b.0).collect()).collect();
    assert_eq!(kinds, vec![vec![FireKind::Fire, FireKind::Smoke], vec![], vec![]]);
    assert!((set[0].boxes[0].1.x1 - 0.4).abs() < 1e-6);
    // A list file, relative to itself.
    std::fs::write(dir.path().join("check.txt"), "valid/images/a.jpg\n# note\nvalid/images/c.jpg\n").unwrap();
    assert_eq!(load_set(&dir.path().join("check.txt"), &opts, &fire()).unwrap().len(), 2);
    // A bad line.
    std::fs::write(split.join("labels/c.txt"), "2 0.5 nan 0.1 0.1\n").unwrap();
    let err = load_set(dir.path(), &opts, &fire()).unwrap_err().to_string();
    assert!(err.contains("c.txt:1") && err.contains("outside 0–1"), "{err}");
    // Ultralytics' layout: images/val/x.jpg → labels/val/x.txt.
    let ul = dir.path().join("ul");
    std::fs::create_dir_all(ul.join("images/val")).unwrap();
    std::fs::create_dir_all(ul.join("labels/val")).unwrap();
    std::fs::write(ul.join("images/val/e.jpg"), b"").unwrap();
    std::fs::write(ul.join("labels/val/e.txt"), "1 0.5 0.5 0.2 0.2\n").unwrap();
    let opts_fs = ImageEvalOptions { names: Some(vec!["fire".into(), "smoke".into()]), top: 5 };
    let got = load_set(&ul, &opts_fs, &fire()).unwrap();
    assert_eq!(got[0].boxes.iter().map(|b| b.0).collect::<Vec<_>>(), vec![FireKind::Smoke]);
    // Names that map to nothing.
    let opts = ImageEvalOptions { names: Some(vec!["car".into()]), top: 5 };
    let err = load_set(dir.path(), &opts, &fire()).unwrap_err().to_string();
    assert!(err.contains("--names"), "{err}");
}

#[test]
fn curve_points_and_average_precision() {
    let p = point(0.5, [(true, true), (true, false), (false, true), (false, false)].into_iter());
    assert_eq!((p.tp, p.fp, p.fn_, p.precision, p.recall), (1, 1, 1, 0.5, 0.5));
    let curve = vec![
        CurvePoint { threshold: 0.1, tp: 4, fp: 4, fn_: 0, precision: 0.5, recall: 1.0 },
        CurvePoint { threshold: 0.5, tp: 2, fp: 0, fn_: 2, precision: 1.0, recall: 0.5 },
        CurvePoint { threshold: 0.9, tp: 0, fp: 0, fn_: 4, precision: 0.0, recall: 0.0 },
    ];
    // 0.5 of recall at precision 1, then 0.5 more at 0.5.
    assert_eq!(average_precision(&curve), 0.75);
}
