//! An in-process RTSP server (`gstreamer-rtsp-server`) that serves an H.264
//! MP4 clip, for the demo command and the end-to-end tests.
//!
//! Each client gets its own media (not shared), so a reconnecting agent
//! starts the clip from the beginning, like a camera that was rebooted. The
//! server runs its own GLib main loop on its own thread; [`RtspServer::stop`]
//! drops every client connection at once, which is how the tests simulate a
//! camera going away mid-stream.

use std::path::Path;
use std::sync::mpsc;
use std::thread::JoinHandle;

use gstreamer::glib;
use gstreamer_rtsp_server as rtsp;
use gstreamer_rtsp_server::prelude::*;

use super::SourceError;

pub struct RtspServer {
    port: u16,
    mount: String,
    main_loop: glib::MainLoop,
    context: glib::MainContext,
    thread: Option<JoinHandle<()>>,
}

impl RtspServer {
    /// Serves `clip` (MP4 with H.264) at `rtsp://127.0.0.1:{port}{mount}`.
    /// Port 0 picks a free one.
    pub fn start(clip: &Path, port: u16, mount: &str) -> Result<RtspServer, SourceError> {
        super::init()?;
        if !clip.is_file() {
            return Err(SourceError::Build(format!("clip {} does not exist (run deploy/setup.sh)", clip.display())));
        }
        let launch = format!(
            "( filesrc location=\"{}\" ! qtdemux ! h264parse ! rtph264pay name=pay0 pt=96 config-interval=-1 )",
            clip.display().to_string().replace('"', "\\\"")
        );
        let context = glib::MainContext::new();
        let main_loop = glib::MainLoop::new(Some(&context), false);
        let (tx, rx) = mpsc::channel::<Result<u16, String>>();
        let loop2 = main_loop.clone();
        let context2 = context.clone();
        let mount2 = mount.to_string();
        let thread = std::thread::Builder::new()
            .name("rtsp-server".into())
            .spawn(move || {
                let ctx = context2.clone();
                let run = context2.with_thread_default(|| {
                    let server = rtsp::RTSPServer::new();
                    server.set_address("127.0.0.1");
                    server.set_service(&port.to_string());
                    let factory = rtsp::RTSPMediaFactory::new();
                    factory.set_launch(&launch);
                    factory.set_shared(false);
                    let Some(mounts) = server.mount_points() else {
                        let _ = tx.send(Err("server has no mount points".into()));
                        return;
                    };
                    mounts.add_factory(&mount2, factory);
                    let source = match server.attach(Some(&ctx)) {
                        Ok(id) => id,
                        Err(e) => {
                            let _ = tx.send(Err(format!("cannot listen on 127.0.0.1:{port}: {e}")));
                            return;
                        }
                    };
                    let _ = tx.send(Ok(server.bound_port() as u16));
                    loop2.run();
                    // Stopping: hang up on every client, then stop listening.
                    server.client_filter(Some(&mut |_, client| {
                        client.close();
                        rtsp::RTSPFilterResult::Remove
                    }));
                    source.remove();
                });
                if let Err(e) = run {
                    let _ = tx.send(Err(e.to_string()));
                }
            })
            .map_err(|e| SourceError::Build(e.to_string()))?;
        let port = rx
            .recv()
            .map_err(|_| SourceError::Build("RTSP server thread died".into()))?
            .map_err(SourceError::Build)?;
        Ok(RtspServer { port, mount: mount.to_string(), main_loop, context, thread: Some(thread) })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("rtsp://127.0.0.1:{}{}", self.port, self.mount)
    }

    /// Hangs up on all clients and stops listening.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        // Quit from inside the loop's own context: a quit() that lands
        // before run() has started would be lost.
        let main_loop = self.main_loop.clone();
        self.context.invoke(move || main_loop.quit());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for RtspServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}
