"""Video output: an .mp4 at the source's size, orientation and timing, with its audio.

Frames are encoded as they come (nothing is held back), with H.264 (libx264, bundled in
PyAV's FFmpeg) or MPEG-4 part 2 where a build lacks it; both play in every common
player. Each frame keeps the timestamp it had in the source, in the source's time
base, so a variable-frame-rate clip keeps its timing. Frames are written upright (the
reader already applied the rotation), so no display matrix is needed, and in the
source's YUV matrix (BT.709 for most phone video), tagged, so colours do not shift. H.264 in 4:2:0
needs even sizes: an odd width or height is padded by one repeated edge pixel.

The source's first audio track is copied packet for packet when MP4 can hold its codec
(AAC, MP3, Opus, FLAC, AC-3, ALAC), else re-encoded to AAC. Audio is read from a second
demuxer of the source and interleaved as the video advances, so memory stays flat. The
same frames give the same bytes. The file appears only when complete (written to a
temporary sibling, then renamed).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path

import numpy as np

from mirror import MirrorError
from mirror.files import atomic_path

from .video import VideoInfo

MP4_AUDIO = {"aac", "mp3", "opus", "flac", "ac3", "eac3", "alac"}
AUDIO_LEAD_S = 0.5  # audio muxed this far ahead of the video, so the muxer interleaves
MPEG_RANGE = 1  # AVCOL_RANGE_MPEG: limited (16-235) range, what players expect


def video_codec() -> str:
    """libx264 when this FFmpeg has the encoder, else mpeg4."""
    import av

    return "libx264" if "libx264" in av.codecs_available else "mpeg4"


class _Audio:
    """The source's first audio track, copied or re-encoded into the output container."""

    def __init__(self, source: Path, out) -> None:
        import av

        self._in = av.open(str(source))
        src = self._in.streams.audio[0]
        self.copy = src.codec_context.name in MP4_AUDIO
        if self.copy:
            self.stream = out.add_stream_from_template(src)
        else:
            self.stream = out.add_stream("aac", rate=src.codec_context.sample_rate or 48000)
            self._resampler = av.AudioResampler(format="fltp", layout=src.codec_context.layout,
                                                rate=self.stream.codec_context.sample_rate)
        self._src = src
        self._packets = self._in.demux(src)
        self._out = out
        self._pending = None

    def _emit(self, packet) -> None:
        if self.copy:
            packet.stream = self.stream
            self._out.mux(packet)
            return
        for frame in packet.decode():
            for f in self._resampler.resample(frame):
                self._out.mux(self.stream.encode(f))

    def until(self, seconds: float | None) -> None:
        """Mux the audio up to `seconds` (None: all of it)."""
        while True:
            pkt = self._pending or next(self._packets, None)
            self._pending = None
            if pkt is None:
                return
            if pkt.dts is None and pkt.size == 0:  # the demuxer's final flush packet
                continue
            if seconds is not None and pkt.pts is not None and float(pkt.pts * self._src.time_base) > seconds:
                self._pending = pkt
                return
            self._emit(pkt)

    def close(self) -> None:
        self.until(None)
        if not self.copy:
            for f in self._resampler.resample(None):
                self._out.mux(self.stream.encode(f))
            self._out.mux(self.stream.encode(None))
        self._in.close()


class Mp4Writer:
    """Encodes frames as they are written; see ``open_mp4``."""

    def __init__(self, path: Path, info: VideoInfo, audio_from: Path | None) -> None:
        import av

        self._box = av.open(str(path), "w", format="mp4")
        self.width, self.height = info.width + info.width % 2, info.height + info.height % 2
        self.time_base = info.time_base
        vs = self._box.add_stream(video_codec(), rate=info.fps)
        vs.width, vs.height, vs.pix_fmt = self.width, self.height, "yuv420p"
        vs.time_base = info.time_base
        vs.codec_context.time_base = info.time_base
        # Coded and tagged with the source's YUV matrix, so players show the source's colours.
        self.colorspace = info.colorspace
        vs.codec_context.colorspace, vs.codec_context.color_range = info.colorspace, MPEG_RANGE
        if vs.codec_context.name == "libx264":
            # One thread: libx264's frame threads made the same frames code differently from run
            # to run here (1 time in 3), and on 2 cores they were no faster (9.1 vs 10.0 ms a frame).
            vs.codec_context.options = {"crf": "18", "preset": "veryfast", "threads": "1"}
        else:
            vs.codec_context.bit_rate = 8_000_000
        self._video = vs
        self._audio = _Audio(audio_from, self._box) if audio_from is not None else None
        self.frames = 0

    def write(self, rgb: np.ndarray, pts: int) -> None:
        """Encode one RGB uint8 [H,W,3] frame shown at `pts` (in the source's time base)."""
        import av

        h, w = rgb.shape[:2]
        if (h, w) != (self.height, self.width):
            rgb = np.pad(rgb, ((0, self.height - h), (0, self.width - w), (0, 0)), mode="edge")
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p",
                                                                        dst_colorspace=self.colorspace)
        frame.colorspace, frame.color_range = self.colorspace, MPEG_RANGE
        frame.pts, frame.time_base = int(pts), self.time_base
        if self._audio is not None:
            self._audio.until(float(pts * Fraction(self.time_base)) + AUDIO_LEAD_S)
        self._box.mux(self._video.encode(frame))
        self.frames += 1

    def close(self) -> None:
        self._box.mux(self._video.encode(None))
        if self._audio is not None:
            self._audio.close()
        self._box.close()


@contextmanager
def open_mp4(path: str | Path, info: VideoInfo, audio_from: str | Path | None = None) -> Iterator[Mp4Writer]:
    """An Mp4Writer for `path`; the file is in place only if the block completes."""
    import av

    path = Path(path)
    if path.suffix.lower() != ".mp4":
        raise MirrorError(f"the output video must be an .mp4 file, got '{path.name}'")
    with atomic_path(path) as tmp:
        try:
            writer = Mp4Writer(tmp, info, Path(audio_from) if audio_from else None)
        except av.FFmpegError as exc:
            raise MirrorError(f"cannot write '{path}' ({exc})") from None
        try:
            yield writer
        finally:
            writer.close()
