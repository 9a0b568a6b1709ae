//! Builds one camera's GStreamer pipeline.
//!
//! ```text
//! rtsp://, file://  uridecodebin (rtspsrc: TCP, latency) ─┐
//! test://PATTERN    videotestsrc is-live ─────────────────┤
//!                                                         ▼
//!   videorate max-rate=fps   ← drop to the analysis rate while still YUV
//!   videoscale               ← scale before conversion: fewer pixels to convert
//!   videoconvert             ← only now to packed RGB
//!   capsfilter video/x-raw,format=RGB,width=W,pixel-aspect-ratio=1/1
//!   appsink (max-buffers=1, drop) → FrameSlot
//! ```
//!
//! With `decode = "keyframes"` a pad probe on the decoder's sink hands it
//! only the stream's keyframes: delta frames are dropped still compressed,
//! so they cost neither decoding nor conversion.
//!
//! Only the width is fixed; GStreamer picks the height that keeps the
//! stream's display aspect ratio, up to [`max_height`]: a stream whose
//! aspect (or pixel aspect) would make a taller frame is refused with a
//! camera error, rather than decoded into frames of gigabytes. The appsink copies each frame into the
//! camera's [`FrameSlot`] and returns at once: decode never waits for
//! analysis.

use std::sync::Arc;
use std::time::Duration;

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;

use super::{FrameSlot, SourceError};
use crate::config::{Camera, Decode};
use crate::redact::redact;

/// A built, not yet playing, pipeline.
pub struct CameraPipeline {
    pub pipeline: gst::Pipeline,
}

/// Source-level settings shared by every camera.
#[derive(Debug, Clone, Copy)]
pub struct SourceOptions {
    pub latency_ms: u32,
}

/// The most pixels an analysed frame may have (4K UHD). The analysis width
/// is at most 3840, so only a stream's aspect can push a frame past it.
pub(crate) const MAX_FRAME_PIXELS: u64 = 3840 * 2160;
/// The tallest frame analysed, as height over width: a 9:16 portrait
/// corridor camera is 1.8; 4 leaves room for odd lenses, not for a stream
/// whose header claims 1:1000.
pub(crate) const MAX_ASPECT: u64 = 4;

/// The tallest frame analysed at `width`.
pub(crate) fn max_height(width: u32) -> u32 {
    let w = u64::from(width.max(1));
    (MAX_FRAME_PIXELS / w).min(w * MAX_ASPECT).min(i32::MAX as u64) as u32
}

/// Refuses (with an element error, which ends this run with a camera error
/// naming the stream's size) a stream whose display aspect would make the
/// analysed frame taller than [`max_height`]. The caps already bound the
/// height, so nothing huge is allocated meanwhile; this makes the refusal
/// visible instead of a silently squashed picture.
fn refuse_extreme_aspect(scale: &gst::Element, width: u32) {
    let Some(pad) = scale.static_pad("sink") else { return };
    pad.add_probe(gst::PadProbeType::EVENT_DOWNSTREAM, move |pad, info| {
        let Some(gst::EventView::Caps(caps)) = info.event().map(|e| e.view()) else {
            return gst::PadProbeReturn::Ok;
        };
        let Ok(vi) = gst_video::VideoInfo::from_caps(caps.caps()) else { return gst::PadProbeReturn::Ok };
        let par = vi.par();
        let (n, d) = (f64::from(par.numer().max(1)), f64::from(par.denom().max(1)));
        let display_w = f64::from(vi.width().max(1)) * n / d;
        let height = f64::from(vi.height()) * f64::from(width) / display_w;
        let max = max_height(width);
        if height > f64::from(max) {
            if let Some(element) = pad.parent_element() {
                gst::element_error!(
                    element,
                    gst::StreamError::Format,
                    (
                        "the stream's {}x{} picture (pixel aspect {}/{}) would be {width}x{height:.0} at analysis_width {width}, \
                         above the limit of {max} rows ({MAX_ASPECT}:1 or {MAX_FRAME_PIXELS} pixels)",
                        vi.width(),
                        vi.height(),
                        par.numer(),
                        par.denom()
                    )
                );
            }
            return gst::PadProbeReturn::Drop;
        }
        gst::PadProbeReturn::Ok
    });
}

fn make(name: &'static str) -> Result<gst::Element, SourceError> {
    gst::ElementFactory::make(name).build().map_err(|_| SourceError::MissingElement(name))
}

/// Builds the pipeline for `camera`, delivering frames into `slot`.
pub fn build(camera: &Camera, opts: SourceOptions, slot: Arc<FrameSlot>) -> Result<CameraPipeline, SourceError> {
    let pipeline = gst::Pipeline::with_name(&format!("camera-{}", camera.id));
    let rate = make("videorate")?;
    // max-rate is an integer: fractional rates round up, never below 1.
    rate.set_property("max-rate", (camera.fps.ceil() as i32).max(1));
    rate.set_property("drop-only", true);
    let scale = make("videoscale")?;
    refuse_extreme_aspect(&scale, camera.analysis_width);
    let convert = make("videoconvert")?;
    let caps = gst::Caps::builder("video/x-raw")
        .field("format", "RGB")
        .field("width", camera.analysis_width as i32)
        .field("height", gst::IntRange::new(1, max_height(camera.analysis_width) as i32))
        .field("pixel-aspect-ratio", gst::Fraction::new(1, 1))
        .build();
    let scheme = camera.url.split_once("://").map(|(s, _)| s.to_ascii_lowercase()).unwrap_or_default();
    let sink = gst_app::AppSink::builder()
        .caps(&caps)
        .max_buffers(1)
        .drop(true)
        // A file plays at its own pace like a camera would; live sources are
        // paced by the network already and must not be held back by clock sync.
        .sync(!scheme.starts_with("rtsp"))
        .build();
    pipeline.add_many([&rate, &scale, &convert, sink.upcast_ref()]).map_err(|e| SourceError::Build(e.to_string()))?;
    gst::Element::link_many([&rate, &scale, &convert, sink.upcast_ref()])
        .map_err(|e| SourceError::Build(e.to_string()))?;

    if scheme == "test" {
        let src = make("videotestsrc")?;
        src.set_property("is-live", true);
        let pattern = camera.url.split_once("://").map(|(_, p)| p).unwrap_or("");
        if !pattern.is_empty() {
            // set_property_from_str panics on an unknown value: check first.
            let known = src
                .property_type("pattern")
                .and_then(gst::glib::EnumClass::with_type)
                .is_some_and(|c| c.value_by_nick(pattern).is_some());
            if !known {
                return Err(SourceError::Build(format!("test://{pattern}: unknown videotestsrc pattern")));
            }
            src.set_property_from_str("pattern", pattern);
        }
        let src_caps = gst::Caps::builder("video/x-raw")
            .field("width", 1280)
            .field("height", 720)
            .field("framerate", gst::Fraction::new(25, 1))
            .build();
        let filter = make("capsfilter")?;
        filter.set_property("caps", &src_caps);
        pipeline.add_many([&src, &filter]).map_err(|e| SourceError::Build(e.to_string()))?;
        gst::Element::link_many([&src, &filter, &rate]).map_err(|e| SourceError::Build(e.to_string()))?;
    } else {
        let decode = make("uridecodebin")?;
        decode.set_property("uri", &camera.url);
        let latency = opts.latency_ms;
        decode.connect("source-setup", false, move |args| {
            if let Some(src) = args.get(1).and_then(|v| v.get::<gst::Element>().ok()) {
                if src.find_property("protocols").is_some() {
                    // TCP interleaving survives NAT and lossy Wi-Fi links where
                    // UDP silently loses packets.
                    src.set_property_from_str("protocols", "tcp");
                    src.set_property("latency", latency);
                    // Fail within seconds, not the default 20 s, when the
                    // camera does not answer (this also bounds TEARDOWN on
                    // a dead connection); the supervisor retries.
                    if src.find_property("tcp-timeout").is_some() {
                        src.set_property("tcp-timeout", 3_000_000u64);
                    }
                }
            }
            None
        });
        link_decoded_video(&decode, &rate);
        if camera.decode == Decode::Keyframes {
            if let Some(bin) = decode.downcast_ref::<gst::Bin>() {
                bin.connect_deep_element_added(|_, _, element| {
                    if is_video_decoder(element) {
                        keyframes_only(element);
                    }
                });
            }
        }
        pipeline.add(&decode).map_err(|e| SourceError::Build(e.to_string()))?;
    }

    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                let (Some(buffer), Some(caps)) = (sample.buffer(), sample.caps()) else {
                    gst::element_error!(sink, gst::ResourceError::Failed, ("sample without buffer or caps"));
                    return Err(gst::FlowError::Error);
                };
                let info = gst_video::VideoInfo::from_caps(caps).map_err(|_| {
                    gst::element_error!(sink, gst::CoreError::Negotiation, ("unreadable caps"));
                    gst::FlowError::NotNegotiated
                })?;
                if u64::from(info.width()) * u64::from(info.height()) > MAX_FRAME_PIXELS {
                    gst::element_error!(
                        sink,
                        gst::StreamError::Format,
                        ("a {}x{} frame is above the limit of {MAX_FRAME_PIXELS} pixels", info.width(), info.height())
                    );
                    return Err(gst::FlowError::Error);
                }
                // Map the buffer: its memory may not be plain CPU RAM.
                let map = buffer.map_readable().map_err(|_| {
                    gst::element_error!(sink, gst::ResourceError::Read, ("cannot map buffer"));
                    gst::FlowError::Error
                })?;
                let pts = buffer.pts().map(|t| Duration::from_nanos(t.nseconds()));
                slot.put(pts, |out| copy_rgb(&map, &info, out));
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
    Ok(CameraPipeline { pipeline })
}

/// Whether `element` is a video decoder (by its factory's class).
pub(crate) fn is_video_decoder(element: &gst::Element) -> bool {
    element.factory().is_some_and(|f| {
        let klass = f.metadata(gst::ELEMENT_METADATA_KLASS).unwrap_or_default();
        klass.contains("Decoder") && klass.contains("Video")
    })
}

/// Makes `decoder` see only keyframes: a probe on its sink pad drops every
/// buffer the parser flagged as a delta unit, before any decoding work. The
/// decoder then outputs one picture per GOP; it never sees a frame whose
/// references it lacks, because an IDR frame needs none.
pub fn keyframes_only(decoder: &gst::Element) {
    let Some(pad) = decoder.static_pad("sink") else { return };
    // `Handled` (the probe consumed the buffer), not `Drop`: through
    // gstreamer-rs 0.25 on GStreamer 1.22, `Drop` logs a CRITICAL
    // (`gst_mini_object_unref` of NULL) for every dropped frame.
    pad.add_probe(gst::PadProbeType::BUFFER, |_, info| match info.buffer() {
        Some(b) if b.flags().contains(gst::BufferFlags::DELTA_UNIT) => gst::PadProbeReturn::Handled,
        _ => gst::PadProbeReturn::Ok,
    });
}

/// Links `uridecodebin`'s video pad, once it appears, to `next`'s sink
/// (audio and other pads are left unlinked).
pub(crate) fn link_decoded_video(decode: &gst::Element, next: &gst::Element) {
    let next_weak = next.downgrade();
    decode.connect_pad_added(move |_, pad| {
        let Some(next) = next_weak.upgrade() else { return };
        let is_video = pad
            .current_caps()
            .or_else(|| Some(pad.query_caps(None)))
            .and_then(|c| c.structure(0).map(|s| s.name().starts_with("video/")))
            .unwrap_or(false);
        let Some(sinkpad) = next.static_pad("sink") else { return };
        if is_video && !sinkpad.is_linked() {
            if let Err(e) = pad.link(&sinkpad) {
                gst::element_error!(next, gst::StreamError::Failed, ("cannot link decoded video: {:?}", e));
            }
        }
    });
}

/// Copies a (possibly row-padded) RGB frame into a packed buffer.
pub(crate) fn copy_rgb(src: &[u8], info: &gst_video::VideoInfo, out: &mut Vec<u8>) -> Option<(u32, u32)> {
    let (w, h) = (info.width(), info.height());
    let stride = *info.stride().first()? as usize;
    let row = w as usize * 3;
    let offset = *info.offset().first()?;
    if stride < row || src.len() < offset + stride * (h as usize - 1) + row {
        return None;
    }
    out.clear();
    out.reserve(row * h as usize);
    for y in 0..h as usize {
        let start = offset + y * stride;
        out.extend_from_slice(&src[start..start + row]);
    }
    Some((w, h))
}

/// A bus error as text a technician can act on: which element (`rtspsrc`,
/// `filesrc`, `decodebin`), GStreamer's message, and the cause from the
/// debug text (source-code locations dropped), credentials removed.
pub(crate) fn describe_error(err: &gst::message::Error) -> SourceError {
    let element = err
        .src()
        .map(|s| s.path_string().to_string())
        .and_then(|p| p.rsplit('/').next().map(str::to_string))
        .map(|last| {
            let ty = last.split(':').next().unwrap_or(&last);
            ty.strip_prefix("Gst").unwrap_or(ty).to_ascii_lowercase()
        })
        .unwrap_or_else(|| "pipeline".into());
    let mut message = err.error().to_string();
    if let Some(debug) = err.debug() {
        let cause: Vec<&str> = debug
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.contains(".c(") && !l.starts_with("/Gst"))
            .collect();
        if debug.contains("not-linked") {
            message = format!("{message} (no video stream the agent can decode: audio only, or an unknown codec?)");
        } else if !cause.is_empty() {
            message = format!("{message} ({})", cause.join("; "));
        }
    }
    SourceError::Stream { element: redact(&element), message: redact(&message) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `launch` to its end.
    fn run(launch: &str) {
        let p = gst::parse::launch(launch).unwrap().downcast::<gst::Pipeline>().unwrap();
        p.set_state(gst::State::Playing).unwrap();
        let bus = p.bus().unwrap();
        let msg = bus
            .timed_pop_filtered(gst::ClockTime::from_seconds(60), &[gst::MessageType::Eos, gst::MessageType::Error])
            .expect("EOS or error");
        assert!(matches!(msg.view(), gst::MessageView::Eos(_)), "{msg:?}");
        p.set_state(gst::State::Null).unwrap();
    }

    /// Plays a file camera to its end: the last bus message (EOS or
    /// error) and the frames delivered into its slot.
    fn play(url: &str, decode: &str) -> (gst::Message, u64) {
        let camera: Camera =
            toml::from_str(&format!("id = \"c\"\nname = \"c\"\nurl = \"{url}\"\nfps = 25\ndecode = \"{decode}\""))
                .unwrap();
        let slot = Arc::new(FrameSlot::new());
        let cp = build(&camera, SourceOptions { latency_ms: 0 }, slot.clone()).unwrap();
        cp.pipeline.set_state(gst::State::Playing).unwrap();
        let bus = cp.pipeline.bus().unwrap();
        let msg = bus
            .timed_pop_filtered(gst::ClockTime::from_seconds(60), &[gst::MessageType::Eos, gst::MessageType::Error])
            .expect("EOS or error");
        cp.pipeline.set_state(gst::State::Null).unwrap();
        (msg, slot.stats().decoded)
    }

    /// Frames a file camera delivers into its slot from start to end.
    fn frames(url: &str, decode: &str) -> u64 {
        let (msg, decoded) = play(url, decode);
        assert!(matches!(msg.view(), gst::MessageView::Eos(_)), "{msg:?}");
        decoded
    }

    #[test]
    fn a_stream_too_tall_to_analyse_is_a_camera_error_not_a_huge_frame() {
        crate::source::init().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let clip = dir.path().join("tall.mp4");
        // 16×2048: at the default analysis width of 640 it would be
        // 640×81920 (157 MB a frame).
        run(&format!(
            "videotestsrc num-buffers=10 ! video/x-raw,width=16,height=2048,framerate=25/1 ! \
             x264enc speed-preset=ultrafast ! h264parse ! mp4mux ! filesink location={}",
            clip.display()
        ));
        let (msg, decoded) = play(&format!("file://{}", clip.display()), "all");
        let gst::MessageView::Error(e) = msg.view() else { panic!("a 640x81920 stream played: {msg:?}") };
        let text = describe_error(e).to_string();
        assert!(text.contains("16x2048") && text.contains("limit of 2560 rows"), "{text}");
        assert_eq!(decoded, 0, "no frame was analysed");
        assert_eq!(max_height(640), 2560);
        assert_eq!(max_height(3840), 2160, "the pixel limit binds at 4K widths");
    }

    #[test]
    fn keyframe_decode_delivers_one_frame_per_gop() {
        crate::source::init().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let clip = dir.path().join("gop.mp4");
        // 75 frames, a keyframe every 25: three GOPs of moving content.
        run(&format!(
            "videotestsrc num-buffers=75 pattern=ball ! video/x-raw,width=320,height=180,framerate=25/1 ! \
             x264enc key-int-max=25 speed-preset=ultrafast ! h264parse ! mp4mux ! filesink location={}",
            clip.display()
        ));
        let url = format!("file://{}", clip.display());
        assert_eq!(frames(&url, "all"), 75);
        assert_eq!(frames(&url, "keyframes"), 3);
    }
}
