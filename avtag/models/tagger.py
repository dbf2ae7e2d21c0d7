"""The one audio-visual composition: audio branch + video branch + label map + late fusion.

Li et al. (2017), "A Light-Weight Multimodal Framework for Improved Environmental Audio
Tagging" (arXiv 1712.09680): an audio network tags the sound, an image network names the
objects in sampled frames, the objects are mapped to sound classes, and the two clip-wise
score vectors are combined by late fusion. ``avtag tag``, ``avtag evaluate`` and
``avtag ablate`` all run through :class:`AudioVisualTagger`::

    waveform (B, samples) --AudioModel--> audio clip-wise (B, C_audio) --columns of the vocabulary--> (B, C)
    frames (B, n, H, W, 3) uint8 --preprocess, EfficientNet-Lite0--> object logits (B, n, 1000)
                 (or cached frame_logits (B, n, 1000))
       --softmax--> object probabilities --@ label map (1000, C)--> frame scores (B, n, C) --pool--> (B, C)
    audio (B, C), video (B, C) --LateFusion--> fused clip-wise (B, C)

The tagger's classes may differ from the audio model's (the video branch is zero-shot):
a class the audio model does not know gets NaN audio scores and keeps its video score.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from avtag import AvtagError
from avtag.models.fusion import LateFusion
from avtag.models.types import TaggerOutput


class TaggerInputError(AvtagError):
    """Inputs that do not fit the tagger (no branch can run, wrong shapes)."""


class AudioVisualTagger(nn.Module):
    """Audio branch, video branch and late fusion in one ``nn.Module``.

    Args:
        classes: the sound classes tagged, in output order.
        audio: the audio branch (:class:`~avtag.models.audio.AudioModel`) or None.
        video: the frame network (:class:`~avtag.models.video.VideoBranch`) or None; without it
            the video branch still runs on given ``frame_logits``.
        label_map: :class:`~avtag.models.label_map.LabelMap` for ``classes`` (needed for any video score).
        fusion: :class:`~avtag.models.fusion.LateFusion` (default: weighted mean, w = 0.5).
        aggregate: pooling of the frame scores over a clip: ``mean``, ``max`` or ``meanmax``.
    """

    def __init__(self, classes: Sequence[str], audio: nn.Module | None = None, video: nn.Module | None = None,
                 label_map=None, fusion: LateFusion | None = None, aggregate: str = "max") -> None:
        super().__init__()
        self.classes = tuple(classes)
        self.audio = audio
        self.video = video
        self.aggregate = aggregate
        self.fusion = fusion if fusion is not None else LateFusion(classes=self.classes)
        self.objects: tuple[str, ...] = ()
        if audio is not None:
            index = {name: i for i, name in enumerate(audio.classes)}
            self.register_buffer("audio_index", torch.tensor([index.get(c, -1) for c in self.classes]),
                                 persistent=False)
            self.unknown_to_audio = tuple(c for c in self.classes if c not in index)
        if label_map is not None:
            if tuple(label_map.classes) != self.classes:
                raise TaggerInputError("the label map was built for other classes than the tagger's")
            self.register_buffer("object_map", torch.as_tensor(label_map.matrix, dtype=torch.float32), persistent=False)
            self.objects = tuple(label_map.objects)
            if self.fusion.method == "gated":
                self.fusion.gate(label_map.matrix.sum(axis=0))
        else:
            self.object_map = None

    def optimize_for_inference(self) -> AudioVisualTagger:
        """Eval mode, and the speed-ups of :mod:`avtag.models.fast` (batch norms folded into the
        convolutions, channels-last) in every sub-network that offers them. Results stay the same
        (to ~1e-5); the model can no longer be trained. In place; returns self."""
        self.eval()
        for module in list(self.modules()):
            if module is not self and hasattr(module, "optimize_for_inference"):
                module.optimize_for_inference()
        return self

    @property
    def has_audio(self) -> bool:
        return self.audio is not None

    @property
    def has_video(self) -> bool:
        """True when video scores can be computed (a label map; frames also need the frame network)."""
        return self.object_map is not None

    @property
    def device(self) -> torch.device:
        for tensor in [*self.parameters(), *self.buffers()]:
            return tensor.device
        return torch.device("cpu")

    def _audio(self, waveform: torch.Tensor):
        out = self.audio(waveform)
        idx = self.audio_index
        known = (idx >= 0).to(out.clipwise.device)
        cols = idx.clamp_min(0)
        nan = torch.tensor(float("nan"), device=out.clipwise.device)
        clipwise = torch.where(known, out.clipwise[:, cols].float(), nan)
        framewise = torch.where(known, out.framewise[:, :, cols].float(), nan)
        attention = None if out.attention is None else torch.where(known, out.attention[:, :, cols].float(), nan)
        return clipwise, framewise, attention, out

    def frame_logits(self, frames: torch.Tensor) -> torch.Tensor:
        """ImageNet logits ``(B, n, 1000)`` of uint8 frames ``(B, n, H, W, 3)`` (preprocessed here)."""
        if frames.dim() != 5:
            raise TaggerInputError(f"frames must be (batch, frames, H, W, 3) uint8, got shape {tuple(frames.shape)}")
        b, n = frames.shape[:2]
        if b * n == 0:
            return torch.zeros((b, n, len(self.objects)), device=self.device)
        return torch.stack(self.clip_frame_logits(list(frames)))

    def clip_frame_logits(self, clips: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """ImageNet logits ``(n_i, 1000)`` of each clip's uint8 frames ``(n_i, H_i, W_i, 3)``.

        Frames of several clips (of any size) share the network's batches of ``video.batch_size``
        frames; each frame is preprocessed (resized, centre-cropped, normalised) on the tagger's
        device just before its batch, so memory stays at one batch of 224 x 224 images.
        """
        from avtag.models.video import preprocess_frames

        if self.video is None:
            raise TaggerInputError("frames given but the tagger has no frame network (video branch off)")
        items = [(c, i) for c, frames in enumerate(clips) for i in range(len(frames))]
        size, out = self.video.batch_size, []
        for start in range(0, len(items), size):
            chunk, images = items[start:start + size], []
            for c in dict.fromkeys(c for c, _ in chunk):  # the chunk's frames, clip by clip
                rows = [i for cc, i in chunk if cc == c]
                frames = clips[c][rows[0]:rows[-1] + 1].to(self.device)
                images.append(preprocess_frames(frames, self.video.crop_fraction))
            out.append(self.video(torch.cat(images)).float())
        logits = torch.cat(out) if out else torch.zeros((0, len(self.objects)), device=self.device)
        return list(torch.split(logits, [len(frames) for frames in clips]))

    def forward(self, waveform: torch.Tensor | None = None, frames: torch.Tensor | None = None,
                frame_logits: torch.Tensor | None = None, frame_mask: torch.Tensor | None = None) -> TaggerOutput:
        """Tag a batch of clips.

        Args:
            waveform: ``(B, samples)`` mono at the audio model's sample rate, or None.
            frames: ``(B, n, H, W, 3)`` uint8 RGB video frames, or None.
            frame_logits: ``(B, n, 1000)`` ImageNet logits (e.g. from the feature cache) instead of frames.
            frame_mask: ``(B, n)`` bool, False for padding frames (clips with fewer frames).

        Returns:
            :class:`TaggerOutput`: ``clipwise`` fused ``(B, C)``; ``audio_clipwise`` / ``video_clipwise``
            ``(B, C)`` (None for a branch that did not run; NaN for classes a branch cannot score);
            ``framewise`` / ``attention`` ``(B, T, C)`` and ``frame_hop`` of the audio branch;
            ``video_framewise`` ``(B, n, C)``, ``object_probs`` ``(B, 1000)`` of the video branch.

        Raises:
            TaggerInputError: no input a branch of this tagger can use, or frames without a frame network.
        """
        out = TaggerOutput(clipwise=torch.empty(0))
        audio_scores = video_scores = None
        if waveform is not None and self.audio is not None:
            audio_scores, out.framewise, out.attention, raw = self._audio(waveform.to(self.device))
            out.frame_hop, out.embedding = raw.frame_hop, raw.embedding
        if (frames is not None or frame_logits is not None) and self.object_map is not None:
            from avtag.models.video import pool_frames

            logits = self.frame_logits(frames) if frame_logits is None else frame_logits.to(self.device).float()
            mask = frame_mask.to(self.device) if frame_mask is not None else None
            probs = logits.softmax(dim=-1)  # (B, n, objects)
            out.video_framewise = (probs @ self.object_map).clamp(0.0, 1.0)
            video_scores = pool_frames(out.video_framewise, mask, self.aggregate)
            out.object_probs = pool_frames(probs, mask, self.aggregate)
            out.frame_mask = mask
        if audio_scores is None and video_scores is None:
            raise TaggerInputError("nothing to tag: give a waveform (audio branch) or frames / frame logits "
                                   "(video branch) for a branch this tagger has")
        out.audio_clipwise, out.video_clipwise = audio_scores, video_scores
        out.clipwise = self.combine(audio_scores, video_scores)
        return out

    def combine(self, audio: torch.Tensor | None, video: torch.Tensor | None) -> torch.Tensor:
        """The late fusion of branch scores ``(B, C)`` (None: branch did not run); classes no
        branch can score get 0."""
        return torch.nan_to_num(self.fusion(audio, video), nan=0.0)
