//! One decoded frame as analysis sees it, with the two clocks every stage
//! after the decoder speaks.

use std::time::SystemTime;

/// One frame handed to analysis (borrowed: the decoder's buffer is read
/// in place, never copied per stage).
pub struct FrameInput<'a> {
    /// Packed RGB, `width * height * 3` bytes.
    pub rgb: &'a [u8],
    pub width: u32,
    pub height: u32,
    /// Rule time in seconds (monotonic per camera): what rules measure
    /// dwell and persistence in, so a replay runs them exactly as live.
    pub t: f64,
    /// Wall-clock time that payloads report.
    pub wall: SystemTime,
}
