"""A network camera for tests: the clip's frames as MJPEG over HTTP on 127.0.0.1, looping."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2


class MjpegCamera:
    def __init__(self, video: Path, fps: float = 30.0, port: int = 0, frames: int = 90) -> None:
        capture = cv2.VideoCapture(str(video))
        self.jpegs = []
        while len(self.jpegs) < frames:
            ok, image = capture.read()
            if not ok:
                break
            self.jpegs.append(
                cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 80])[1].tobytes()
            )
        capture.release()
        self.fps = fps
        self.port = port
        self.sent = 0  # frames served, over all clients
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/stream.mjpg"

    def start(self) -> MjpegCamera:
        camera = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                k, start = 0, time.monotonic()
                try:
                    while camera._server is not None:
                        jpeg = camera.jpegs[k % len(camera.jpegs)]
                        self.wfile.write(
                            b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                            + str(len(jpeg)).encode() + b"\r\n\r\n" + jpeg + b"\r\n"
                        )  # fmt: skip
                        camera.sent += 1
                        k += 1
                        time.sleep(max(0.0, start + k / camera.fps - time.monotonic()))
                except (BrokenPipeError, ConnectionResetError, OSError):
                    return

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
