//! Frames for replay, from a video file or a still image, with clip-relative
//! timestamps.
//!
//! A video is decoded with GStreamer as a live camera is (`uridecodebin →
//! videoscale → videoconvert → RGB`), but the appsink is *pulled* and never
//! drops: replay picks the frames to analyse by timestamp (see
//! [`super::run`]), so the result does not depend on how fast the machine
//! decodes. With `realtime` the appsink syncs to the clock and drops like a
//! live camera.
//!
//! A still image is decoded with `image` and repeated at `fps` for a set
//! number of seconds: a scene that does not move (a fallen person, a parked
//! car) is what a camera would show.

use std::path::Path;

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;

use super::ReplayError;

/// One frame with its clip time.
pub struct ClipFrame {
    pub rgb: Vec<u8>,
    pub width: u32,
    pub height: u32,
    /// Seconds from the start of the clip.
    pub t: f64,
}

/// Is this path a still image (by extension)?
pub(crate) fn is_still(path: &Path) -> bool {
    let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    matches!(ext.as_deref(), Some("jpg" | "jpeg" | "png"))
}

/// A still image scaled to `width` (aspect kept), as packed RGB.
pub(crate) fn load_still(path: &Path, width: u32) -> Result<ClipFrame, ReplayError> {
    let img = image::open(path)
        .map_err(|e| ReplayError::Input { file: path.display().to_string(), message: e.to_string() })?
        .to_rgb8();
    let (w, h) = img.dimensions();
    let height = ((h as f64 * width as f64 / w.max(1) as f64).round() as u32).max(1);
    if height > 8192 {
        return Err(ReplayError::Input {
            file: path.display().to_string(),
            message: format!("{w}x{h} is too tall to analyse at width {width}"),
        });
    }
    let img = image::imageops::resize(&img, width, height, image::imageops::FilterType::Triangle);
    Ok(ClipFrame { rgb: img.into_raw(), width, height, t: 0.0 })
}

/// The nice value of an offline decode's threads (see [`VideoFrames::open`]).
const DECODE_NICE: i32 = 10;

/// A video file being decoded.
pub struct VideoFrames {
    pipeline: gst::Pipeline,
    sink: gst_app::AppSink,
    file: String,
    /// The first frame's timestamp. MP4s with B-frames often start at a
    /// decode delay (e.g. 0.08 s), which would shift every clip time.
    first_pts: Option<f64>,
}

impl VideoFrames {
    /// Opens `path` and starts decoding, scaled to `width`.
    pub fn open(path: &Path, width: u32, realtime: bool) -> Result<VideoFrames, ReplayError> {
        let file = path.display().to_string();
        let input = |message: String| ReplayError::Input { file: file.clone(), message };
        let abs = std::fs::canonicalize(path).map_err(|e| input(e.to_string()))?;
        let uri = gst::glib::filename_to_uri(&abs, None).map_err(|e| input(e.to_string()))?;
        crate::source::init().map_err(|e| input(e.to_string()))?;
        let make = |name: &'static str| {
            gst::ElementFactory::make(name).build().map_err(|_| input(format!("GStreamer element {name} missing")))
        };
        let pipeline = gst::Pipeline::with_name("replay");
        let decode = make("uridecodebin")?;
        decode.set_property("uri", uri.as_str());
        let scale = make("videoscale")?;
        let convert = make("videoconvert")?;
        // Scaling and conversion split over the cores (both default to one
        // thread; at 1080p the conversion is a stage of its own).
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
        scale.set_property("n-threads", cores);
        convert.set_property("n-threads", cores);
        let caps = gst::Caps::builder("video/x-raw")
            .field("format", "RGB")
            .field("width", width as i32)
            .field("pixel-aspect-ratio", gst::Fraction::new(1, 1))
            .build();
        let sink = gst_app::AppSink::builder().caps(&caps).sync(realtime).max_buffers(2).drop(realtime).build();
        pipeline.add_many([&decode, &scale, &convert, sink.upcast_ref()]).map_err(|e| input(e.to_string()))?;
        gst::Element::link_many([&scale, &convert, sink.upcast_ref()]).map_err(|e| input(e.to_string()))?;
        crate::source::pipeline::link_decoded_video(&decode, &scale);
        if !realtime {
            // Offline, nothing is lost by waiting: decoding at a lower
            // priority than the analysis keeps it from pre-empting a
            // running inference (whose threads wait for each other), and
            // lets it fill the gaps instead. Streaming threads report
            // `Enter` from themselves; libav's decoder threads, made later by
            // these threads, inherit the value.
            if let Some(bus) = pipeline.bus() {
                bus.set_sync_handler(|_, msg| {
                    if let gst::MessageView::StreamStatus(s) = msg.view() {
                        if s.get().0 == gst::StreamStatusType::Enter {
                            // SAFETY: plain integers; who = 0 is the calling thread on Linux.
                            unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, DECODE_NICE) };
                        }
                    }
                    gst::BusSyncReply::Pass
                });
            }
        }
        pipeline.set_state(gst::State::Playing).map_err(|_| input("cannot start decoding".into()))?;
        Ok(VideoFrames { pipeline, sink, file, first_pts: None })
    }

    /// The next frame, `Ok(None)` at the end of the clip.
    pub fn next_frame(&mut self) -> Result<Option<ClipFrame>, ReplayError> {
        loop {
            match self.sink.pull_sample() {
                Ok(sample) => {
                    let (Some(buffer), Some(caps)) = (sample.buffer(), sample.caps()) else { continue };
                    let info = gst_video::VideoInfo::from_caps(caps).map_err(|e| self.err(e.to_string()))?;
                    let map = buffer.map_readable().map_err(|e| self.err(e.to_string()))?;
                    let pts = buffer.pts().map(|p| p.nseconds() as f64 / 1e9).unwrap_or(0.0);
                    let t = pts - *self.first_pts.get_or_insert(pts);
                    let mut rgb = Vec::new();
                    let Some((width, height)) = crate::source::pipeline::copy_rgb(&map, &info, &mut rgb) else {
                        return Err(self.err("short frame buffer".into()));
                    };
                    return Ok(Some(ClipFrame { rgb, width, height, t }));
                }
                Err(_) => {
                    // EOS or an error: the bus says which (waiting briefly,
                    // so a decode error is never taken for the clip's end).
                    let bus = self.pipeline.bus().ok_or_else(|| self.err("no bus".into()))?;
                    let msg = bus.timed_pop_filtered(
                        gst::ClockTime::from_seconds(5),
                        &[gst::MessageType::Eos, gst::MessageType::Error],
                    );
                    if let Some(gst::MessageView::Error(e)) = msg.as_ref().map(|m| m.view()) {
                        return Err(self.err(crate::source::pipeline::describe_error(e).to_string()));
                    }
                    return Ok(None);
                }
            }
        }
    }

    fn err(&self, message: String) -> ReplayError {
        ReplayError::Input { file: self.file.clone(), message }
    }
}

impl Drop for VideoFrames {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}
