//! An in-process RTSP server (`gstreamer-rtsp-server`) that serves an H.264
//! MP4 clip (or any `gst-launch` description), for the demo command, the
//! end-to-end tests and the benches.
//!
//! Each client gets its own media (not shared), so a reconnecting agent
//! starts the clip from the beginning, like a camera that was rebooted. The
//! server runs its own GLib main loop on its own thread; [`RtspServer::stop`]
//! drops every client connection at once, which is how the tests simulate a
//! camera going away mid-stream.

use std::io;
use std::path::Path;
use std::thread::JoinHandle;

use gstreamer::glib;
use gstreamer_rtsp_server as rtsp;
use gstreamer_rtsp_server::prelude::*;

/// A camera on loopback; stops (hanging up on every client) on drop.
pub struct RtspServer {
    port: u16,
    mount: String,
    server: rtsp::RTSPServer,
    source: Option<glib::SourceId>,
    main_loop: glib::MainLoop,
    context: glib::MainContext,
    thread: Option<JoinHandle<()>>,
}

impl RtspServer {
    /// Serves `clip` (MP4 with H.264) at `rtsp://127.0.0.1:{port}{mount}`.
    /// Port 0 picks a free one.
    pub fn start(clip: &Path, port: u16, mount: &str) -> io::Result<RtspServer> {
        init()?;
        if !clip.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("clip {} does not exist (run deploy/setup.sh)", clip.display()),
            ));
        }
        let launch = format!(
            "( filesrc location=\"{}\" ! qtdemux ! h264parse ! rtph264pay name=pay0 pt=96 config-interval=-1 )",
            clip.display().to_string().replace('"', "\\\"")
        );
        RtspServer::start_launch(&launch, port, mount)
    }

    /// Serves a `gst-launch` description (its payloader named `pay0`), e.g.
    /// a live test pattern encoded to H.264 that never ends.
    pub fn start_launch(launch: &str, port: u16, mount: &str) -> io::Result<RtspServer> {
        init()?;
        let server = rtsp::RTSPServer::new();
        server.set_address("127.0.0.1");
        server.set_service(&port.to_string());
        let factory = rtsp::RTSPMediaFactory::new();
        factory.set_launch(launch);
        factory.set_shared(false);
        let mounts = server.mount_points().ok_or_else(|| io::Error::other("RTSP server has no mount points"))?;
        mounts.add_factory(mount, factory);

        // The server's sockets and clients live on a private context, run
        // by a private loop on its own thread.
        let context = glib::MainContext::new();
        let source = server
            .attach(Some(&context))
            .map_err(|e| io::Error::other(format!("cannot listen on 127.0.0.1:{port}: {e}")))?;
        let port = server.bound_port() as u16;
        let main_loop = glib::MainLoop::new(Some(&context), false);
        let (ctx, ml) = (context.clone(), main_loop.clone());
        let thread = std::thread::Builder::new().name("rtsp-server".into()).spawn(move || {
            let _ = ctx.with_thread_default(|| ml.run());
        })?;
        Ok(RtspServer {
            port,
            mount: mount.to_string(),
            server,
            source: Some(source),
            main_loop,
            context,
            thread: Some(thread),
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("rtsp://127.0.0.1:{}{}", self.port, self.mount)
    }

    /// Hangs up on all clients (tearing down their media) and stops
    /// listening, like a camera losing power.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let Some(thread) = self.thread.take() else { return };
        let (server, main_loop, context) = (self.server.clone(), self.main_loop.clone(), self.context.clone());
        let source = self.source.take();
        // Run the teardown inside the loop's own context, where the server's
        // objects live; a quit() issued before run() started would be lost,
        // an invoked one is not.
        self.context.invoke(move || {
            if let Some(pool) = server.session_pool() {
                pool.filter(Some(&mut |_, _| rtsp::RTSPFilterResult::Remove));
            }
            server.client_filter(Some(&mut |_, client| {
                client.close();
                rtsp::RTSPFilterResult::Remove
            }));
            // SourceId::remove() looks in the default context; ours is private.
            if let Some(src) = source.and_then(|id| context.find_source_by_id(&id)) {
                src.destroy();
            }
            main_loop.quit();
        });
        let _ = thread.join();
    }
}

/// Initialises GStreamer once; safe to call many times.
fn init() -> io::Result<()> {
    gstreamer::init().map_err(|e| io::Error::other(format!("GStreamer init failed: {e}")))
}

impl Drop for RtspServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}
