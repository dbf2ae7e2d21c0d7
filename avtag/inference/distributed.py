"""Batch tagging on a Ray cluster with Ray Data: files -> decode (CPU tasks) -> tagger (actors) -> JSON lines.

    from avtag.inference.distributed import tag_with_ray
    report = tag_with_ray(["archive/"], "results.jsonl", address="auto")   # or None: a local Ray instance

The pipeline is one Ray Dataset, streamed (files are never all in memory):

1. ``from_items``: the files to do (folders expanded as ``avtag tag`` does), minus those already in the
   output: a killed run resumes where it stopped.
2. ``map_batches`` with a function (stateless CPU tasks): each file decoded by an
   :class:`avtag.io.IsolatedDecoder` worker kept by the Ray worker process across tasks, so a decoder that
   crashes or hangs costs that file only (its row carries the reason). The decoded :class:`~avtag.io.Clip`
   travels pickled through Ray's object store (a 10 s clip with 1 fps frames is ~3 MB).
3. ``map_batches`` with a class on an ``ActorPoolStrategy`` pool: each actor builds one
   :class:`~avtag.inference.tagger.Tagger` (``Tagger.from_config``) and tags the decoded clips
   (``Tagger.tag_clip``); files longer than ``tag.long_file_s`` are tagged window by window in the actor
   (``Tagger.tag_files``). One actor per GPU with ``num_gpus=1`` when the cluster has GPUs, else CPU actors.
4. The driver appends each result as one line of ``avtag tag --format json`` (``TagResult.to_dict``;
   a failure is ``{file, error}``) to the output file and flushes it: one line per file, in finishing order.

Every node needs avtag (``pip install 'avtag[ray]'``) and read access to the files under the same paths.
"""
from __future__ import annotations

import json
import os
import pickle
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from avtag import AvtagError
from avtag.config import AvtagConfig


class RayTagError(AvtagError):
    """Ray missing or unreachable, or an output file that cannot be written."""


@dataclass
class RayTagReport:
    """What :func:`tag_with_ray` did."""

    out: Path
    files: int = 0  # files given (after expanding folders)
    already_done: int = 0  # skipped: already in the output
    tagged: int = 0
    failed: int = 0
    seconds: float = 0.0
    actors: int = 0
    gpus_per_actor: int = 0


#: seconds the tagger actors may take to start before the run fails (a cluster that cannot place them)
ACTOR_START_TIMEOUT_S = 600.0


def done_files(out: str | Path) -> set[str]:
    """``file`` of every complete JSON line already in ``out`` (a last line cut by a kill is removed first).
    Read line by line: memory grows with the number of files, not with the size of the output."""
    path = Path(out)
    if not path.is_file():
        return set()
    done, end = set(), 0
    with open(path, "rb+") as f:
        for line in f:
            if not line.endswith(b"\n"):
                f.truncate(end)  # a kill left this line without its newline: that file is done again
                break
            end += len(line)
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict) and isinstance(row.get("file"), str):
                done.add(row["file"])
    return done


# ----------------------------------------------------------------------------- Ray stages
_DECODER: dict = {}

#: bytes of memory a decode task reserves on its node (Ray's ``memory`` resource)
DECODE_MEMORY = 512 * 2**20


def decode_batch(batch: dict, load_kwargs: dict, head: float, long_file_s: float) -> dict:
    """Ray Data task: decode the files of ``batch["file"]`` in an isolated worker (kept across tasks).

    Returns columns ``file``, ``clip`` (pickled :class:`~avtag.io.Clip`, empty for a failure or a long file),
    ``error`` (one line naming the file, empty when decoded) and ``long`` (duration >= ``long_file_s``).
    """
    from avtag.io import DecodeJob, IsolatedDecoder

    key = json.dumps(load_kwargs, sort_keys=True)
    decoder = _DECODER.get(key)
    if decoder is None:
        decoder = _DECODER[key] = IsolatedDecoder(1, load_kwargs=load_kwargs)
    files = [str(f) for f in batch["file"]]
    out: dict = {"file": [], "clip": [], "error": [], "long": []}
    jobs = (DecodeJob(f, {"end": head}, key=f) for f in files)
    for job, clip, error in decoder.imap(jobs, ordered=True):
        long = clip is not None and error is None and clip.duration >= long_file_s
        out["file"].append(job.key)
        out["clip"].append(pickle.dumps(clip) if clip is not None and error is None and not long else b"")
        out["error"].append(str(error) if error is not None else "")
        out["long"].append(bool(long))
    return out


class TagActor:
    """Ray Data actor: one :class:`~avtag.inference.tagger.Tagger`, JSON lines out.

    Args:
        config, checkpoint, labels, device: as :meth:`Tagger.from_config`.
        segments, top_k, threshold: as :meth:`Tagger.tag_clip`.
    """

    def __init__(self, config: AvtagConfig, checkpoint, labels, device: str, segments: bool, top_k, threshold):
        from avtag.inference.tagger import Tagger

        self.tagger = Tagger.from_config(config, checkpoint=checkpoint, labels=labels, device=device)
        self.kwargs = dict(segments=segments, top_k=top_k, threshold=threshold)

    def __call__(self, batch: dict) -> dict:
        """Tag the decoded clips of ``batch``; their frames go through the video network together (as
        :class:`~avtag.inference.pipeline.FilePipeline` does for ``tag.batch_clips`` clips)."""
        from avtag.inference.formats import format_json
        from avtag.inference.pipeline import combine, infer_clip
        from avtag.inference.results import TagResult

        tagger, kw = self.tagger, self.kwargs
        results: list = [None] * len(batch["file"])
        clips = {}
        for i, (file, blob, error, long) in enumerate(zip(batch["file"], batch["clip"], batch["error"], batch["long"])):
            if error:
                results[i] = TagResult(file=str(file), error=str(error))
            elif long:
                results[i] = next(tagger.tag_files([str(file)], **kw))
            else:
                clips[i] = pickle.loads(blob)
        with_frames = [i for i, c in clips.items() if c.frames is not None and len(c.frames)
                       and tagger.engine.has_frames]
        logits = {}
        if with_frames:
            logits = dict(zip(with_frames, tagger.engine.frame_logits([clips[i].frames for i in with_frames])))
        for i, clip in clips.items():
            file = str(batch["file"][i])
            try:
                part = infer_clip(tagger, clip, logits.get(i), kw["segments"])
                results[i] = combine(tagger, [part], file, clip.duration, kw["segments"], kw["top_k"], kw["threshold"])
            except AvtagError as exc:
                results[i] = TagResult(file=file, error=str(exc))
        return {"line": [format_json(r) for r in results], "failed": [not r.ok for r in results]}


# ----------------------------------------------------------------------------- driver
def _connect(address: str | None, num_cpus: int | None):
    try:
        import ray
    except ImportError:
        raise RayTagError("tagging on Ray needs Ray: pip install 'avtag[ray]'") from None
    if not ray.is_initialized():
        kwargs = dict(include_dashboard=False, logging_level="WARNING", log_to_driver=False)
        try:
            if address in (None, "", "local"):
                ray.init(num_cpus=num_cpus, **kwargs)
            else:
                ray.init(address=address, **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise RayTagError(f"--ray {address or 'local'}: cannot connect to the Ray cluster "
                              f"({str(exc).splitlines()[0]})") from None
    return ray


def _decode_kwargs(config: AvtagConfig, checkpoint, labels) -> dict:
    """:func:`avtag.io.load_clip` arguments for the decode tasks: the ones the tagger's own pipeline uses
    (its audio model's sample rate; frames unless the video branch is off). Checks the checkpoint and the
    labels here, on the driver, before the cluster does any work."""
    from avtag.inference.pipeline import FilePipeline
    from avtag.inference.tagger import Tagger, parse_labels

    parse_labels(labels)
    use_video = config.fusion.mode != "audio"
    if checkpoint is not None and config.fusion.mode != "video":
        probe = Tagger.from_config(config, checkpoint=checkpoint, labels=labels, device="cpu", use_video=False,
                                   fast=False)
        kwargs = FilePipeline(probe).load_kwargs()
    else:
        v = config.video
        kwargs = dict(sample_rate=16000, audio=True, fps=v.fps, num_frames=v.num_frames,
                      frame_short_side=v.frame_short_side)
    kwargs["video"] = use_video
    return kwargs


def tag_with_ray(paths: Sequence[str | Path], out: str | Path, *, address: str | None = None,
                 config: AvtagConfig | None = None, checkpoint="pretrained:default", labels=None,
                 segments: bool = False, top_k: int | None = None, threshold: float | None = None,
                 actors: int | None = None, gpus: bool = True, decode_batch_size: int = 4,
                 num_cpus: int | None = None, progress: bool = True,
                 actor_start_timeout_s: float = ACTOR_START_TIMEOUT_S) -> RayTagReport:
    """Tag media files on Ray; append one JSON line per file to ``out``.

    Args:
        paths: media files or folders (searched recursively, as ``avtag tag``).
        out: the JSON-lines file; files already in it are skipped (a rerun resumes).
        address: a Ray cluster (``auto``, ``HOST:PORT``, ``ray://HOST:10001``); None or ``local``: start a
            local instance with ``num_cpus`` CPUs (None: all).
        config, checkpoint, labels, segments, top_k, threshold: as :meth:`Tagger.from_config` and
            :meth:`Tagger.tag_files` (``avtag tag`` builds them from its options).
        actors: tagger actors (None: one per GPU, else one per two CPUs of the cluster, at least one).
        gpus: put the actors on GPUs when the cluster has some (False: CPU actors, ``--device cpu``).
        decode_batch_size: files per decode task.
        progress: Ray Data's progress bars on stderr.
        actor_start_timeout_s: how long the tagger actors may take to start (Ray Data's
            ``wait_for_min_actors_s``); a cluster that cannot place them, or whose worker processes die
            at start, is then a :class:`RayTagError` instead of a run that waits for ever.

    Returns:
        A :class:`RayTagReport` (``failed``: files of this run written as ``{file, error}`` rows).

    Raises:
        RayTagError: Ray missing or unreachable, ``out`` not writable, the actors not started within
            ``actor_start_timeout_s``. Bad checkpoints or labels raise their own one-line errors before any
            work starts.
    """
    from avtag.inference.tagger import expand_inputs

    t0 = time.perf_counter()
    config = config or AvtagConfig()
    out = Path(out)
    files = [str(p) for p in expand_inputs(paths)]
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        done = done_files(out)
        sink = open(out, "a", encoding="utf-8")
    except OSError as exc:
        raise RayTagError(f"{out}: cannot write the results ({exc.strerror or exc})") from None
    todo = list(dict.fromkeys(f for f in files if f not in done))
    report = RayTagReport(out=out, files=len(files), already_done=len(files) - len(todo))
    load_kwargs = _decode_kwargs(config, checkpoint, labels)
    if not todo:
        sink.close()
        report.seconds = time.perf_counter() - t0
        return report

    ray = _connect(address, num_cpus)
    from ray.data import ActorPoolStrategy, DataContext

    context = DataContext.get_current()
    context.enable_progress_bars, context.wait_for_min_actors_s = progress, actor_start_timeout_s
    resources = ray.cluster_resources()
    gpus, cpus = int(resources.get("GPU", 0)) if gpus else 0, max(1, int(resources.get("CPU", 1)))
    n_actors = max(1, actors or (gpus if gpus else cpus // 2))
    report.actors, report.gpus_per_actor = n_actors, 1 if gpus else 0
    tag = config.tag
    ds = ray.data.from_items([{"file": f} for f in todo],
                             override_num_blocks=max(1, min(len(todo) // max(1, decode_batch_size), 10_000)))
    # the memory reservation (an isolated decoder plus a clip's frames) also keeps Ray from fusing the decode
    # tasks into the tagger actors: decoding stays in CPU tasks, scheduled beside the actors
    ds = ds.map_batches(decode_batch, batch_size=decode_batch_size, num_cpus=1, memory=DECODE_MEMORY,
                        fn_kwargs={"load_kwargs": load_kwargs, "head": tag.long_file_s + 1e-3,
                                   "long_file_s": tag.long_file_s})
    ds = ds.map_batches(TagActor, batch_size=max(1, tag.batch_clips), compute=ActorPoolStrategy(size=n_actors),
                        num_gpus=1 if gpus else 0, num_cpus=0 if gpus else 1,
                        fn_constructor_kwargs=dict(config=config, checkpoint=checkpoint, labels=labels,
                                                   device="cuda" if gpus else "cpu", segments=segments,
                                                   top_k=top_k, threshold=threshold))
    try:
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            for line, failed in zip(batch["line"], batch["failed"]):
                sink.write(str(line) + "\n")
                report.tagged += 1
                report.failed += bool(failed)
            sink.flush()
            os.fsync(sink.fileno())
    except ray.exceptions.GetTimeoutError:
        need = f"{1 if gpus else 0} GPU and {0 if gpus else 1} CPU each"
        raise RayTagError(f"the {n_actors} tagger actor(s) ({need}) did not start within {actor_start_timeout_s:g} s: "
                          "the cluster cannot place them or their processes die at start (see Ray's logs); "
                          f"{report.tagged} file(s) written to {out}, a rerun resumes") from None
    finally:
        sink.close()
    report.seconds = time.perf_counter() - t0
    return report
