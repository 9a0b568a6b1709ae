//! `replay --annotate OUT.mp4`: the analysed frames with boxes, track ids,
//! skeletons, lanes and an event banner, encoded as H.264 in MP4.
//!
//! The frames are pushed into `appsrc → videoconvert → x264enc → mp4mux →
//! filesink` with their clip timestamps, so the video plays at the analysis
//! rate and lines up with the printed event times.

use std::path::Path;

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use super::ReplayError;

pub struct Annotator {
    pipeline: gst::Pipeline,
    src: gst_app::AppSrc,
    file: String,
    size: (u32, u32),
}

impl Annotator {
    /// Starts an encoder for `width` × `height` RGB frames at about `fps`.
    pub fn create(path: &Path, width: u32, height: u32, fps: f64) -> Result<Annotator, ReplayError> {
        let file = path.display().to_string();
        let err = |message: String| ReplayError::Output { file: file.clone(), message };
        let make = |name: &'static str| {
            gst::ElementFactory::make(name).build().map_err(|_| err(format!("GStreamer element {name} missing")))
        };
        crate::source::init().map_err(|e| err(e.to_string()))?;
        let pipeline = gst::Pipeline::with_name("annotate");
        let caps = gst::Caps::builder("video/x-raw")
            .field("format", "RGB")
            .field("width", width as i32)
            .field("height", height as i32)
            .field("framerate", gst::Fraction::approximate_f64(fps).unwrap_or(gst::Fraction::new(5, 1)))
            .build();
        let src = gst_app::AppSrc::builder().caps(&caps).format(gst::Format::Time).block(true).build();
        let convert = make("videoconvert")?;
        let enc = make("x264enc")?;
        enc.set_property_from_str("speed-preset", "veryfast");
        let parse = make("h264parse")?;
        let mux = make("mp4mux")?;
        let sink = make("filesink")?;
        sink.set_property("location", &file);
        pipeline.add_many([src.upcast_ref(), &convert, &enc, &parse, &mux, &sink]).map_err(|e| err(e.to_string()))?;
        gst::Element::link_many([src.upcast_ref(), &convert, &enc, &parse, &mux, &sink])
            .map_err(|e| err(e.to_string()))?;
        pipeline.set_state(gst::State::Playing).map_err(|_| err("cannot start the encoder".into()))?;
        Ok(Annotator { pipeline, src, file, size: (width, height) })
    }

    /// Adds one frame shown from clip time `t` for `duration` seconds.
    /// Frames of another size (a stream that changed resolution) are skipped.
    pub fn push(&mut self, rgb: Vec<u8>, width: u32, height: u32, t: f64, duration: f64) -> Result<(), ReplayError> {
        if (width, height) != self.size {
            return Ok(());
        }
        let mut buffer = gst::Buffer::from_mut_slice(rgb);
        if let Some(b) = buffer.get_mut() {
            b.set_pts(gst::ClockTime::from_nseconds((t.max(0.0) * 1e9) as u64));
            b.set_duration(gst::ClockTime::from_nseconds((duration.max(0.001) * 1e9) as u64));
        }
        self.src.push_buffer(buffer).map(|_| ()).map_err(|e| ReplayError::Output {
            file: self.file.clone(),
            message: format!("encoder refused a frame: {e:?}"),
        })
    }

    /// Ends the stream and waits until the file is complete.
    pub fn finish(self) -> Result<(), ReplayError> {
        let err = |message: String| ReplayError::Output { file: self.file.clone(), message };
        self.src.end_of_stream().map_err(|e| err(format!("{e:?}")))?;
        let bus = self.pipeline.bus().ok_or_else(|| err("no bus".into()))?;
        let result = match bus
            .timed_pop_filtered(gst::ClockTime::from_seconds(60), &[gst::MessageType::Eos, gst::MessageType::Error])
        {
            Some(msg) => match msg.view() {
                gst::MessageView::Error(e) => Err(err(e.error().to_string())),
                _ => Ok(()),
            },
            None => Err(err("encoder did not finish within 60 s".into())),
        };
        let _ = self.pipeline.set_state(gst::State::Null);
        result
    }
}
