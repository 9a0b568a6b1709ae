//! Clips the benches make for themselves (shared by `keyframes` and
//! `streams`): RGB frames pushed through `x264enc` with continuous
//! timestamps, and a still scene with sensor-like noise.

use std::path::Path;

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

/// Encodes `w`×`h` RGB frames at 25 fps into `out` (MP4, H.264, 1 s GOP),
/// scaled to `out_w`×`out_h` at `kbps`.
pub fn encode(
    out: &Path,
    (w, h): (u32, u32),
    (out_w, out_h): (u32, u32),
    kbps: u32,
    frames: impl Iterator<Item = Vec<u8>>,
) {
    let tmp = out.with_extension("tmp");
    let launch = format!(
        "appsrc name=src format=time block=true ! videoconvert ! videoscale ! \
         video/x-raw,format=I420,width={out_w},height={out_h},pixel-aspect-ratio=1/1 ! \
         x264enc bitrate={kbps} speed-preset=faster key-int-max=25 ! h264parse ! mp4mux ! filesink location=\"{}\"",
        tmp.display()
    );
    edge_agent::source::init().expect("GStreamer");
    let pipeline = gst::parse::launch(&launch).expect("encoder");
    let bin = pipeline.downcast_ref::<gst::Bin>().expect("bin");
    let appsrc = bin.by_name("src").and_then(|e| e.downcast::<gst_app::AppSrc>().ok()).expect("appsrc");
    let caps = gst::Caps::builder("video/x-raw")
        .field("format", "RGB")
        .field("width", w as i32)
        .field("height", h as i32)
        .field("framerate", gst::Fraction::new(25, 1))
        .build();
    appsrc.set_caps(Some(&caps));
    pipeline.set_state(gst::State::Playing).expect("encode");
    for (i, rgb) in frames.enumerate() {
        let mut buffer = gst::Buffer::from_mut_slice(rgb);
        let b = buffer.get_mut().expect("fresh buffer");
        b.set_pts(gst::ClockTime::from_nseconds(i as u64 * 40_000_000));
        b.set_duration(gst::ClockTime::from_nseconds(40_000_000));
        appsrc.push_buffer(buffer).expect("push a frame");
    }
    appsrc.end_of_stream().expect("EOS");
    wait_eos(&pipeline);
    std::fs::rename(&tmp, out).expect("rename the clip");
}

/// Waits for a playing pipeline's end (10 minutes at most), then stops it;
/// panics with GStreamer's message on an error.
pub fn wait_eos(pipeline: &gst::Element) {
    let bus = pipeline.bus().expect("bus");
    let msg = bus
        .timed_pop_filtered(gst::ClockTime::from_seconds(600), &[gst::MessageType::Eos, gst::MessageType::Error])
        .expect("EOS within 600 s");
    let _ = pipeline.set_state(gst::State::Null);
    if let gst::MessageView::Error(e) = msg.view() {
        panic!("{}", e.error());
    }
}

/// `n` copies of a still RGB frame, each with fresh ±2 levels of noise, as
/// a camera sensor gives a scene where nothing moves.
pub fn sensor_noise(still: Vec<u8>, n: usize) -> impl Iterator<Item = Vec<u8>> {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    (0..n).map(move |_| {
        let mut frame = still.clone();
        for p in frame.iter_mut() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            *p = p.saturating_add((seed % 5) as u8).saturating_sub(2);
        }
        frame
    })
}
