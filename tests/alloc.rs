//! The hot path does not allocate per frame: a counting global allocator
//! (per thread, so other tests' threads do not count) around each stage of
//! a camera's analysis, after a warm-up in which scratch buffers grow to
//! their working size.
//!
//! What it proves: a whole `CameraAnalyzer::analyse` (letterbox, inference,
//! decode + NMS, tracker, lane rule) makes no heap allocation per frame.
//! The model run goes through `infer::run::ModelRun` (ONNX Runtime's C
//! `Run` into preallocated outputs; its own arenas are C++ and reused);
//! for scale, the test also counts what `ort`'s `Session::run` would have
//! allocated for the same run.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use alleywatch_testkit::detector;
use edge_agent::camera::{CameraAnalyzer, FrameInput, Models};
use edge_agent::config::Config;
use edge_agent::config::ModelSession;
use edge_agent::metrics::Metrics;

struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: defers to the system allocator; the counter is a plain
// thread-local Cell with no destructor, so touching it never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.with(|c| c.set(c.get() + 1));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCS.with(|c| c.set(c.get() + 1));
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.with(|c| c.set(c.get() + 1));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations `f` makes on this thread.
fn count(f: impl FnOnce()) -> u64 {
    let before = ALLOCS.with(Cell::get);
    f();
    ALLOCS.with(Cell::get) - before
}

const W: u32 = 640;
const H: u32 = 360;

/// A street-like frame with two "cars" (bright blocks) drifting right.
fn frame(i: u32) -> Vec<u8> {
    let mut rgb = vec![0u8; (W * H * 3) as usize];
    for (p, px) in rgb.chunks_exact_mut(3).enumerate() {
        let (x, y) = (p as u32 % W, p as u32 / W);
        let v = (60 + (x / 8 + y / 8) % 40) as u8;
        px.copy_from_slice(&[v, v, v + 10]);
    }
    for (bx, by) in [(40 + i * 2, 220), (300 + i, 240)] {
        for y in by..(by + 60).min(H) {
            for x in bx..(bx + 120).min(W) {
                let o = ((y * W + x) * 3) as usize;
                rgb[o..o + 3].copy_from_slice(&[200, 30, 30]);
            }
        }
    }
    rgb
}

fn config() -> Config {
    let model = detector();
    let text = format!(
        r#"agent_id = "alloc"
site = {{ district = "d", street = "s", community = "c" }}
broker = {{ host = "127.0.0.1" }}
detector = {{ path = "{}", format = "nanodet", input_size = 416, threads = 2, sessions = 1, fps = 5, motion_gate = {{ enabled = false }} }}

[[cameras]]
id = "cam"
name = "cam"
url = "test://ball"
fps = 5
fire = false
lanes = [{{ name = "kerb", polygon = [[0.0, 0.5], [1.0, 0.5], [1.0, 1.0], [0.0, 1.0]], classes = ["car", "truck"], dwell_s = 300 }}]
"#,
        model.display()
    );
    Config::parse(&text, Path::new("<alloc test>")).expect("config")
}

#[test]
fn the_agents_own_per_frame_work_allocates_nothing() {
    let config = config();
    let models = Models::load(&config).expect("load NanoDet (run deploy/setup.sh for ONNX Runtime)");
    let frames: Vec<Vec<u8>> = (0..40).map(frame).collect();

    // Stage by stage, after a warm-up in which scratch buffers grow.
    let detector = &models.detector;
    let mut pre = detector.preprocessor();
    let mut dets = Vec::new();
    for f in &frames[..5] {
        let lb = pre.run(f, W, H).unwrap();
        detector.detect(&mut pre, &lb, &mut dets).unwrap();
    }
    // Totals over 40 frames or runs each, so no remainder hides anything.
    let letterbox = count(|| {
        for f in &frames {
            pre.run(f, W, H).unwrap();
        }
    });
    assert_eq!(letterbox, 0, "letterbox allocated {letterbox} times over 40 frames");

    // Detect: the model run into the session's own output buffers, then
    // decode + NMS into reused buffers.
    let lb = pre.run(&frames[0], W, H).unwrap();
    let runs = frames.len();
    let mut found = 0;
    let detect = count(|| {
        for _ in 0..runs {
            detector.detect(&mut pre, &lb, &mut dets).unwrap();
            found += dets.len();
        }
    });
    assert!(found > 0, "the frames' red blocks are never detected: the check would prove nothing");
    // What `ort`'s own `Session::run` allocates for the same run, for scale.
    let env = edge_agent::infer::runtime::init(None).unwrap();
    let (mut session, _) =
        edge_agent::infer::runtime::open_session(&ModelSession::cpu(&config.detector.path, 2), "nanodet", env).unwrap();
    let wrapper = count(|| {
        for _ in 0..runs {
            let input = ort::value::TensorRef::from_array_view((pre.shape(), pre.tensor())).unwrap();
            let outs = session.run(ort::inputs![input]).unwrap();
            for o in outs.values() {
                let _ = o.try_extract_tensor::<f32>().unwrap();
            }
        }
    });
    assert_eq!(detect, 0, "detect allocated {detect} times over 40 runs");

    // A whole camera: letterbox, inference, decode + NMS, tracker, lane rule.
    let camera = config.cameras[0].clone();
    let mut analyzer = CameraAnalyzer::new(&config, &camera, models.clone(), Arc::new(Metrics::new()));
    let mut out = Vec::with_capacity(8);
    let input = |i: usize| {
        let t = i as f64 / 5.0;
        FrameInput {
            rgb: &frames[i % frames.len()],
            width: W,
            height: H,
            t,
            wall: UNIX_EPOCH + Duration::from_secs_f64(t),
        }
    };
    for i in 0..40 {
        analyzer.analyse(&input(i), &mut out).unwrap();
    }
    assert!(out.is_empty(), "no lane event within the 300 s dwell");
    let whole = count(|| {
        for i in 40..80 {
            analyzer.analyse(&input(i), &mut out).unwrap();
        }
    });
    println!(
        "allocations per frame: letterbox {}, detect {}, whole analysis {} (ort's Session::run alone: {})",
        letterbox as f64 / 40.0,
        detect as f64 / 40.0,
        whole as f64 / 40.0,
        wrapper as f64 / 40.0
    );
    assert_eq!(whole, 0, "40 frames' analysis allocated {whole} times");
}
