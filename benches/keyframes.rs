//! Keyframe-only decode (`cameras[].decode = "keyframes"`) against full
//! decode of the same stream: CPU seconds per second of video.
//!
//! ```text
//! cargo bench --bench keyframes
//! ```
//!
//! Two 10 s 1080p clips, 25 fps, 1 s GOP (`x264enc key-int-max=25`), made
//! once under `target/bench-media/`:
//! - **static**: one still of `bikes.mp4` scaled to 1920×1080 with ±2 levels
//!   of fresh noise per frame, as a camera sensor gives a scene where
//!   nothing moves (a lane, a fire escape at night);
//! - **moving**: the throughput bench's street clip.
//!
//! Each is decoded by the camera path a ≤ 1 fps camera runs (demux, parse,
//! `avdec_h264`, `videorate max-rate=1`, scale, RGB at width 640), as fast as
//! it goes, once decoding every frame and once with the agent's keyframe gate
//! (`source::pipeline::keyframes_only`) on the decoder. The figure is the
//! process's CPU time (user + system), the best of 3 runs.

use std::path::{Path, PathBuf};
use std::time::Duration;

#[path = "media.rs"]
mod media;

use edge_agent::project::find_in_project;
use edge_agent::replay::frames::VideoFrames;
use gstreamer as gst;
use gstreamer::prelude::*;

const FPS: i32 = 25;
const SECONDS: u64 = 10;

fn media_dir() -> PathBuf {
    let dir = find_in_project("target").unwrap_or_else(|| PathBuf::from("target")).join("bench-media");
    std::fs::create_dir_all(&dir).expect("target/bench-media");
    dir
}

/// The static clip: a still frame plus per-frame noise, H.264 1 s GOP.
fn static_clip() -> PathBuf {
    let out = media_dir().join("static-1080p.mp4");
    if out.is_file() {
        return out;
    }
    let src = find_in_project(".deps/media/bikes.mp4").expect(".deps/media/bikes.mp4: run deploy/setup.sh");
    eprintln!("making {} (once) ...", out.display());
    let still = VideoFrames::open(&src, 1920, false).expect("open bikes.mp4").next_frame().expect("decode");
    let still = still.expect("a first frame");
    let size = (still.width, still.height);
    media::encode(&out, size, (1920, 1080), 4000, media::sensor_noise(still.rgb, FPS as usize * SECONDS as usize));
    out
}

/// The moving clip: bikes.mp4 at 1080p (the throughput bench makes the same).
fn moving_clip() -> PathBuf {
    let out = media_dir().join("bikes-1080p-4M.mp4");
    if out.is_file() {
        return out;
    }
    let src = find_in_project(".deps/media/bikes.mp4").expect(".deps/media/bikes.mp4: run deploy/setup.sh");
    eprintln!("making {} (once) ...", out.display());
    let tmp = out.with_extension("tmp");
    let launch = format!(
        "filesrc location=\"{}\" ! decodebin ! videoconvert ! videoscale ! videorate ! \
         video/x-raw,format=I420,width=1920,height=1080,framerate={FPS}/1 ! \
         x264enc bitrate=4000 speed-preset=faster key-int-max={FPS} ! h264parse ! mp4mux ! filesink location=\"{}\"",
        src.display(),
        tmp.display()
    );
    let pipeline = gst::parse::launch(&launch).expect("encoder");
    pipeline.set_state(gst::State::Playing).expect("encode");
    media::wait_eos(&pipeline);
    std::fs::rename(&tmp, &out).expect("rename the clip");
    out
}

/// CPU time of this process so far.
fn cpu() -> Duration {
    // SAFETY: getrusage writes into the struct we pass and has no other
    // preconditions.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// Decodes `clip` through a ≤ 1 fps camera's path; returns (CPU, frames out).
fn decode(clip: &Path, keyframes: bool) -> (Duration, u64) {
    let launch = format!(
        "filesrc location=\"{}\" ! qtdemux ! h264parse ! avdec_h264 name=dec ! \
         videorate max-rate=1 drop-only=true ! videoscale ! videoconvert ! \
         video/x-raw,format=RGB,width=640,pixel-aspect-ratio=1/1 ! fakesink name=sink sync=false signal-handoffs=true",
        clip.display()
    );
    let pipeline = gst::parse::launch(&launch).expect("decode pipeline");
    let bin = pipeline.downcast_ref::<gst::Bin>().expect("bin");
    if keyframes {
        edge_agent::source::pipeline::keyframes_only(&bin.by_name("dec").expect("decoder"));
    }
    let frames = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = frames.clone();
    bin.by_name("sink").expect("sink").connect("handoff", false, move |_| {
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        None
    });
    let c0 = cpu();
    pipeline.set_state(gst::State::Playing).expect("play");
    media::wait_eos(&pipeline);
    (cpu() - c0, frames.load(std::sync::atomic::Ordering::Relaxed))
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    edge_agent::source::init().expect("GStreamer");
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    println!(
        "keyframe-only decode: 1920x1080 H.264, 25 fps, 1 s GOP, {SECONDS} s; camera path at max-rate 1; {cores} cores"
    );
    println!("| scene | full decode CPU s per video s | keyframes only | cut | frames out (full / keyframes) |");
    println!("|---|---|---|---|---|");
    for (scene, clip) in [("static", static_clip()), ("moving", moving_clip())] {
        let best = |keyframes: bool| (0..3).map(|_| decode(&clip, keyframes)).min_by_key(|r| r.0).expect("three runs");
        let (full, full_frames) = best(false);
        let (key, key_frames) = best(true);
        let per_s = |d: Duration| d.as_secs_f64() / SECONDS as f64;
        println!(
            "| {scene} | {:.3} | {:.3} | {:.1}x | {full_frames} / {key_frames} |",
            per_s(full),
            per_s(key),
            full.as_secs_f64() / key.as_secs_f64().max(1e-6)
        );
    }
}
