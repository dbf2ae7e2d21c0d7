"""Media I/O: files in, :class:`Clip` (mono waveform + RGB frames with times) out.

The public API; everything else in this package is an implementation detail::

    from avtag.io import load_clip, iter_windows, probe, IsolatedDecoder

* :func:`probe` reads container headers into a :class:`MediaInfo`;
  :func:`load_clip` decodes a span into a :class:`Clip`; :func:`iter_windows`
  reads a long file window by window; :func:`sample_times` gives the frame
  sampling times; :func:`stream_audio` streams mono audio chunks.
* :class:`IsolatedDecoder` runs the same decoding in worker processes, so a
  decoder that crashes or hangs costs one file (:mod:`avtag.io.isolation`).
* Decoders (:mod:`avtag.io.backends`): libsndfile for audio files, PyAV then decord for other
  audio, PyAV then decord for frames (:class:`FallbackDecoder` decides), behind the
  :class:`DecoderBackend` interface.
* Every problem with a file is one :class:`MediaError` whose message starts with
  the file name.
"""
from avtag.io.backends import BACKENDS, DecoderBackend, DecordBackend, FallbackDecoder, PyAVBackend
from avtag.io.common import Clip, MediaError, MediaInfo
from avtag.io.isolation import DecoderStartError, IsolatedDecoder
from avtag.io.media import (
                            AUDIO_EXTENSIONS,
                            MEDIA_EXTENSIONS,
                            VIDEO_EXTENSIONS,
                            iter_windows,
                            load_clip,
                            probe,
                            sample_times,
                            stream_audio,
)
from avtag.io.workers import DecodeJob

__all__ = ["AUDIO_EXTENSIONS", "BACKENDS", "Clip", "DecodeJob", "DecoderBackend", "DecoderStartError", "DecordBackend",
           "FallbackDecoder", "IsolatedDecoder", "MEDIA_EXTENSIONS", "MediaError", "MediaInfo", "PyAVBackend",
           "VIDEO_EXTENSIONS", "iter_windows", "load_clip", "probe", "sample_times", "stream_audio"]
