"""recover-archive: a folder, glob or archive of 2D clips in, a Parquet motion archive out.

The run (DESIGN 2.6, 4.2, 4.3; ``docs/ARCHIVE_FORMAT.md``):

1. **Plan** (:func:`plan_recovery`, also called by the CLI before any flow run starts, so
   that bad arguments are a message, not a failed run): find the clips
   (:func:`data_catalog.recovery_inputs.discover_clips`); pick the checkpoint (``--checkpoint``
   or the release checkpoint of the clips' joint set, ``checkpoints/<joint_set>.pt`` in the
   repository); read its recovery window (``train_config["window"]``), rig and pointmap
   range; hash the parameters (:func:`tasks.recover.recovery_params_hash`).
2. **Skip** what is finished: the archive's single writer is opened (a second run on the
   same archive stops with ``ArchiveLocked``), every clip's input is fingerprinted by
   hashing bytes, and clips whose ``(sequence_id, input_sha256, checkpoint_sha256,
   params_hash)`` is finished are left out before anything is submitted. Clips whose bytes
   cannot be read are recorded as failed at once.
3. **Recover** one task per batch of ``batch_size`` clips (:data:`tasks.recover.recover_batch`);
   the flow commits each task's archive part as soon as the task completes, so a kill loses
   at most the batches in flight, and the next run does the rest. A task that crashes
   (a bug, or I/O that failed after the retries) is reported as ``errored``; its clips get
   no rows and are tried again by the next run.
4. **Report**: a progress bar on stderr (the CLI), the Prefect artifacts
   ``recover-archive-progress`` (clips done, while it runs), ``recover-archive-summary``
   (totals) and ``recover-archive-failures`` (each failed clip and why), and a printed
   summary.

Concurrency: tasks run on a local thread pool (``workers``, default one per CPU; each task
sets ``torch.set_num_threads(torch_threads)``, default 1: on a shared CPU one torch thread
per task is several times faster than threads that wait on each other), or on an existing
Dask cluster (:func:`run_recover` with ``dask_address``), whose workers must see the input,
the checkpoint and the archive folder at the same paths (a shared filesystem). Batches are
the same either way, so the archives are identical (``archive_digest``).
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import (
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.futures import as_completed
from prefect.task_runners import ThreadPoolTaskRunner

from data_catalog.checkpoints import (
    METHOD_ONLY_RECOVERY,
    CheckpointError,
    load_checkpoint,
    recovery_config,
    release_checkpoint,
)
from data_catalog.motion_archive import (
    SEQUENCES_FILE,
    ArchiveWriter,
    SequenceResult,
    open_archive,
    read_archive_metadata,
)
from data_catalog.recovery_inputs import (
    ClipError,
    ClipRef,
    batch_clips,
    clip_fingerprints,
    discover_clips,
    load_clip,
)
from data_catalog.sources import SourceError
from mocap_core.cameras import Camera
from tasks.recover import (
    MODEL_TO_INPUT,
    BatchOutcome,
    ClipItem,
    RecoverPlan,
    recover_batch,
    recovery_params_hash,
    rerun_available,
    unreadable_fingerprint,
)

#: Clips per task: enough windows per task to fill forward passes and to make Prefect's
#: per-task cost small against the sampling (benchmarks/bench_recover_flow.py).
DEFAULT_BATCH_SIZE = 16
#: Sampling steps by sampler: DDIM 10 is the fast path (mocap_core.recovery.RecoveryConfig),
#: DDPM 100 the reference's every-train-step sampler.
DEFAULT_STEPS = {"ddim": 10, "ddpm": 100}
#: The release checkpoints (``<joint_set>.pt``), committed by the evaluation work.
#: Failed clips named in the log and the printed summary (all are in the archive and the
#: failures artifact).
MAX_FAILURES_SHOWN = 20
# npz clips peeked at to tell the joint set of the inputs when no checkpoint is given.
_PEEK_CLIPS = 8
PROGRESS_KEY = "recover-archive-progress"
SUMMARY_KEY = "recover-archive-summary"
FAILURES_KEY = "recover-archive-failures"


def default_workers() -> int:
    """Threads of the local task runner: one per CPU."""
    return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class RecoverySetup:
    """A resolved run: the plan the tasks get and the clips found."""

    plan: RecoverPlan
    refs: tuple[ClipRef, ...]
    checkpoint_source: str  # "argument" or "release"


def clips_joint_set(refs: list[ClipRef] | tuple[ClipRef, ...]) -> str:
    """The joint set of the inputs, for choosing the release checkpoint.

    ``.npz`` clips say theirs (the first readable of the first few); COCO JSON, OpenPose and
    videos are ``coco17``. Clips of another joint set than the one chosen fail later with
    the reason.

    Raises:
        ValueError: only ``.npz`` clips and none of the first few can be read.
    """
    npz = [ref for ref in refs if ref.kind == "npz"]
    problems = []
    for ref in npz[:_PEEK_CLIPS]:
        try:
            return load_clip(ref).tracks.joint_set
        except ClipError as error:
            problems.append(error.reason)
    if len(npz) < len(refs):
        return "coco17"
    raise ValueError(
        "cannot tell the clips' joint set (the first clips cannot be read: "
        f"{problems[0]}); pass --checkpoint"
    )


def _load_camera(path: str | None) -> dict[str, Any] | None:
    if path is None:
        return None
    camera_path = Path(path)
    if not camera_path.is_file():
        raise FileNotFoundError(f"camera file {path} does not exist")
    try:
        camera = json.loads(camera_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"camera file {path} is not JSON: {error}") from error
    try:
        Camera.from_dict(camera)
    except (TypeError, ValueError) as error:
        raise ValueError(f"camera file {path}: {error}") from error
    return camera


def _check_positive(name: str, value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def plan_recovery(
    input: str,
    output: str,
    *,
    camera: str | None = None,
    checkpoint: str | None = None,
    steps: int | None = None,
    sampler: str = "ddim",
    samples: int | None = None,
    ankle_height_m: float | None = None,
    body_model: str | None = None,
    bvh: bool = False,
    previews: bool = True,
    rrd: bool = False,
    fps: float = 30.0,
    seed: int = 42,
    post_process: bool = True,
    batch_size: int = DEFAULT_BATCH_SIZE,
    workers: int | None = None,
    torch_threads: int | None = 1,
) -> RecoverySetup:
    """Check the arguments of a run and resolve them into a :class:`RecoverySetup`.

    Args: as :func:`recover_archive`.

    Raises:
        FileNotFoundError: the input, the camera file, the checkpoint or the body model is
            missing (for a missing release checkpoint the message says to pass
            ``--checkpoint``).
        ValueError: no clips in the input, a bad camera, a checkpoint that is not a stage-2
            (``finetune-multiview``) checkpoint, ``--body-model`` or ``--bvh`` with a
            ``coco17`` checkpoint, ``--rrd`` without the ``viz`` extra, bad numbers, an
            existing archive of another joint set (or not an archive).
    """
    for name, value in (
        ("steps", steps),
        ("samples", samples),
        ("batch_size", batch_size),
        ("workers", workers),
        ("torch_threads", torch_threads),
    ):
        _check_positive(name, value)
    if sampler not in DEFAULT_STEPS:
        raise ValueError(f"sampler must be 'ddim' or 'ddpm', got {sampler!r}")
    if steps is None:
        steps = DEFAULT_STEPS[sampler]
    if not (isinstance(fps, int | float) and fps > 0):
        raise ValueError(f"fps must be a positive number, got {fps!r}")
    if rrd and not rerun_available():
        raise ValueError(
            "--rrd writes rerun recordings and needs the viz extra: pip install 'mocap2to3[viz]'"
        )
    try:
        refs = tuple(discover_clips(input))
    except SourceError as error:
        raise FileNotFoundError(str(error)) from error
    if not refs:
        raise ValueError(
            f"no clips in {input} (looked for .npz, COCO/OpenPose .json and video files)"
        )
    camera_default = _load_camera(camera)

    source = "argument"
    if checkpoint is None:
        joint_set = clips_joint_set(refs)
        path = release_checkpoint(joint_set)
        if not path.is_file():
            raise FileNotFoundError(
                f"no release checkpoint for {joint_set} clips at {path} (not published yet); "
                "pass --checkpoint FILE, a finetune-multiview checkpoint from "
                "`mocap2to3 train`"
            )
        source = "release"
    else:
        path = Path(checkpoint)
    path = path.absolute()
    payload = load_checkpoint(path)
    if payload["stage"] != "finetune-multiview":
        raise CheckpointError(
            f"{path} is a {payload['stage']} checkpoint; recovery needs a finetune-multiview "
            "(stage 2) checkpoint"
        )
    model_config = payload["model_config"]
    model_joint_set = model_config["joint_set"]
    if model_joint_set not in MODEL_TO_INPUT:
        raise CheckpointError(f"{path}: cannot recover with a {model_joint_set} model")
    input_joint_set = MODEL_TO_INPUT[model_joint_set]
    if (body_model or bvh) and model_joint_set != "smpl22":
        what = "--body-model (SMPL fitting)" if body_model else "--bvh"
        raise ValueError(
            f"{what} needs smpl22 joints, but the checkpoint models {model_joint_set}; "
            "use an smpl22 checkpoint"
        )
    body_model_path = None
    if body_model is not None:
        from data_catalog.readers.amass import load_body_model

        body_model_path = str(Path(body_model).absolute())
        if not Path(body_model_path).exists():
            raise FileNotFoundError(f"body model {body_model} does not exist")
        load_body_model(body_model_path)  # BodyModelError (a ValueError) names the problem
    archive_dir = Path(output)
    if (archive_dir / SEQUENCES_FILE).exists():
        existing = read_archive_metadata(archive_dir)["joint_set"]  # ArchiveFormatError
        if existing != input_joint_set:
            raise ValueError(
                f"archive {output} holds {existing} motion, this checkpoint recovers "
                f"{input_joint_set}: choose another --output"
            )
    elif archive_dir.exists() and not archive_dir.is_dir():
        raise ValueError(f"--output {output} is a file, not an archive folder")
    overrides = {"ankle_height_m": ankle_height_m} if post_process else METHOD_ONLY_RECOVERY
    config = recovery_config(
        payload, sampler=sampler, steps=steps, seed=seed, num_samples=samples, **overrides
    )

    from data_catalog.checkpoints import checkpoint_sha256

    plan = RecoverPlan(
        archive=str(Path(output).absolute()),
        checkpoint=str(path),
        checkpoint_sha256=checkpoint_sha256(path),
        model_joint_set=model_joint_set,
        input_joint_set=input_joint_set,
        recovery=config.model_dump(mode="json"),
        params_hash=recovery_params_hash(
            config, body_model=body_model is not None, default_fps=float(fps), bvh=bvh
        ),
        camera_default=camera_default,
        default_fps=float(fps),
        body_model=body_model_path,
        bvh=bool(bvh),
        previews=bool(previews),
        rrd=bool(rrd),
        torch_threads=torch_threads,
    )
    return RecoverySetup(plan, refs, source)


def _progress_bar(done: int, total: int, width: int = 30) -> None:
    filled = int(width * done / max(total, 1))
    bar = "#" * filled + "-" * (width - filled)
    end = "\n" if done >= total else ""
    # The stream, not print(): log_prints would turn every redraw into a log line.
    sys.stderr.write(f"\r  recover [{bar}] {done}/{total} clips{end}")
    sys.stderr.flush()


def _batches(items: list[ClipItem], batch_size: int) -> list[list[ClipItem]]:
    by_id = {item.ref.clip_id: item for item in items}
    return [
        [by_id[ref.clip_id] for ref in batch]
        for batch in batch_clips([i.ref for i in items], batch_size)
    ]


def format_summary(summary: dict[str, Any]) -> str:
    """The printed summary of a run (totals, then the failed clips and why)."""
    lines = [
        f"recover-archive: {summary['clips']} clips in {summary['input']}: "
        f"{summary['recovered']} recovered ({summary['tracks']} tracks, {summary['frames']} "
        f"frames), {summary['failed']} failed, {summary['skipped']} already done"
        + (f", {summary['errored']} errored (retried next run)" if summary["errored"] else "")
        + f"; {summary['seconds']:.1f} s",
        f"  archive: {summary['archive']}",
        f"  checkpoint: {summary['checkpoint']} (sha256 {summary['checkpoint_sha256'][:12]})",
    ]
    failures = summary["failures"]
    for failure in failures[:MAX_FAILURES_SHOWN]:
        lines.append(f"  failed {failure['clip']}: {failure['reason']}")
    if len(failures) > MAX_FAILURES_SHOWN:
        lines.append(
            f"  ... and {len(failures) - MAX_FAILURES_SHOWN} more (status in sequences.parquet)"
        )
    return "\n".join(lines)


@flow(
    name="recover-archive",
    log_prints=True,
    task_runner=ThreadPoolTaskRunner(max_workers=default_workers()),
)
def recover_archive(
    input: str,
    output: str,
    camera: str | None = None,
    checkpoint: str | None = None,
    steps: int | None = None,
    sampler: str = "ddim",
    samples: int | None = None,
    ankle_height_m: float | None = None,
    body_model: str | None = None,
    bvh: bool = False,
    previews: bool = True,
    rrd: bool = False,
    fps: float = 30.0,
    seed: int = 42,
    post_process: bool = True,
    batch_size: int = DEFAULT_BATCH_SIZE,
    torch_threads: int | None = 1,
    retry_failed: bool = False,
    show_progress: bool = False,
) -> dict[str, Any]:
    """Recover the motion of every clip of ``input`` into the archive ``output``.

    Args:
        input: a folder (recursive), a glob, a clip file, or a ``.tar``/``.zip`` archive of
            clips (DESIGN 4.3).
        output: the archive folder (created; an existing archive is added to).
        camera: the run's camera JSON for clips without a camera file of their own.
        checkpoint: a finetune-multiview checkpoint; default the release checkpoint of
            the clips' joint set.
        steps, sampler, seed: sampling: DDIM (default, 10 steps) or DDPM (the reference's
            sampler, 100 steps); ``steps`` None takes the sampler's default.
        samples: diffusion samples averaged per window (``RecoveryConfig.num_samples``);
            None takes the checkpoint's setting (1 when it has none).
        ankle_height_m: the ground anchor's planted height of ankle keypoints, metres
            (``RecoveryConfig.ankle_height_m``); None takes the joint set's (0.115 m, the
            Bandai-Namco skeleton's). Set it when the input's ankle keypoints sit elsewhere.
        post_process: apply the checkpoint's post-processing settings (the release
            checkpoints anchor the body to the observed rays and the ground, and smooth it);
            False gives the method's final triangulation as is.
        body_model: SMPL body-model folder: fit SMPL to the recovered joints (smpl22).
        bvh: write ``ARCHIVE/bvh/<sequence_id>[_t<track>].bvh`` (smpl22).
        previews: draw ``ARCHIVE/previews/<sequence_id>.png``; ``rrd``: also ``.rrd``.
        fps: frame rate of JSON clips, which carry none.
        batch_size: clips per task.
        torch_threads: torch threads per task (None: torch's default).
        retry_failed: recover clips again whose earlier rows failed.
        show_progress: draw a progress bar on stderr (the CLI sets it).

    Returns:
        Summary: ``clips``, ``skipped``, ``recovered``, ``failed``, ``errored``, ``tracks``,
        ``frames``, ``seconds``, ``failures`` (``{"clip", "reason"}``), ``archive``,
        ``input``, ``checkpoint``, ``checkpoint_sha256``, ``params_hash``, ``report``.
    """
    start = time.perf_counter()
    logger = get_run_logger()
    setup = plan_recovery(
        input,
        output,
        camera=camera,
        checkpoint=checkpoint,
        steps=steps,
        sampler=sampler,
        samples=samples,
        ankle_height_m=ankle_height_m,
        body_model=body_model,
        bvh=bvh,
        previews=previews,
        rrd=rrd,
        fps=fps,
        seed=seed,
        post_process=post_process,
        batch_size=batch_size,
        torch_threads=torch_threads,
    )
    plan = setup.plan
    summary: dict[str, Any] = {
        "input": str(input),
        "archive": plan.archive,
        "checkpoint": plan.checkpoint,
        "checkpoint_sha256": plan.checkpoint_sha256,
        "params_hash": plan.params_hash,
        "clips": len(setup.refs),
        "skipped": 0,
        "recovered": 0,
        "failed": 0,
        "errored": 0,
        "tracks": 0,
        "frames": 0,
        "failures": [],
    }
    with ArchiveWriter(plan.archive, plan.archive_joint_set) as writer:
        finished = open_archive(plan.archive).finished_keys(retry_failed=retry_failed)
        fingerprints = clip_fingerprints(list(setup.refs), plan.camera_default)
        pending: list[ClipItem] = []
        unreadable: list[SequenceResult] = []
        for ref in setup.refs:
            fingerprint = fingerprints[ref.clip_id]
            if isinstance(fingerprint, ClipError):
                key = unreadable_fingerprint(fingerprint.reason)
            else:
                key = fingerprint
            if (ref.clip_id, key, plan.checkpoint_sha256, plan.params_hash) in finished:
                summary["skipped"] += 1
                continue
            if isinstance(fingerprint, ClipError):
                unreadable.append(
                    SequenceResult.failed(
                        sequence_id=ref.clip_id,
                        error=fingerprint.reason,
                        source_path=ref.location,
                        input_sha256=key,
                        checkpoint_sha256=plan.checkpoint_sha256,
                        params_hash=plan.params_hash,
                        joint_set=plan.archive_joint_set,
                        meta={"kind": ref.kind},
                    )
                )
                summary["failures"].append({"clip": ref.clip_id, "reason": fingerprint.reason})
                continue
            pending.append(ClipItem(ref, fingerprint))
        if unreadable:
            writer.write_batch(unreadable)
            summary["failed"] += len(unreadable)

        total = len(pending)
        logger.info(
            "%d clips: %d to recover, %d already done, %d unreadable (checkpoint %s, %s %d steps)",
            len(setup.refs),
            total,
            summary["skipped"],
            len(unreadable),
            Path(plan.checkpoint).name,
            plan.config.sampler,
            plan.config.steps,
        )
        progress_id = create_progress_artifact(
            progress=0.0 if total else 100.0,
            key=PROGRESS_KEY,
            description=f"clips recovered out of {total} to do in {input}",
        )
        if show_progress and total:
            _progress_bar(0, total)
        batches = _batches(pending, batch_size)
        futures = {
            recover_batch.submit(plan, batch, label=f"{i + 1}-of-{len(batches)}"): batch
            for i, batch in enumerate(batches)
        }
        done = 0
        for future in as_completed(list(futures)):
            batch = futures[future]
            try:
                outcome: BatchOutcome = future.result()
            except Exception as error:  # noqa: BLE001 - report, go on; the next run retries
                logger.error("a batch of %d clips crashed: %s", len(batch), error)
                summary["errored"] += len(batch)
                for item in batch:
                    summary["failures"].append(
                        {"clip": item.ref.clip_id, "reason": f"task crashed: {error}"}
                    )
            else:
                writer.commit([outcome.part])  # crash-safe from here on
                for clip in outcome.clips:
                    if clip.status == "ok":
                        summary["recovered"] += 1
                    else:
                        summary["failed"] += 1
                        summary["failures"].append({"clip": clip.clip_id, "reason": clip.error})
                    summary["tracks"] += clip.tracks_ok
                    summary["frames"] += clip.frames
            done += len(batch)
            update_progress_artifact(progress_id, 100.0 * done / max(total, 1))
            if show_progress:
                _progress_bar(done, total)

    summary["failures"].sort(key=lambda f: f["clip"])
    summary["seconds"] = round(time.perf_counter() - start, 3)
    _report(summary, logger)
    summary["report"] = format_summary(summary)
    print(summary["report"])
    return summary


def _report(summary: dict[str, Any], logger: Any) -> None:
    """The summary and failures artifacts, and a warning per failed clip (up to a limit)."""
    keys = ("clips", "recovered", "failed", "skipped", "errored", "tracks", "frames", "seconds")
    row = {key: summary[key] for key in keys}
    row["frames_per_s"] = (
        round(summary["frames"] / summary["seconds"], 1) if summary["seconds"] else 0.0
    )
    row["archive"] = summary["archive"]
    create_table_artifact(
        table=[row],
        key=SUMMARY_KEY,
        description="recover-archive: clips recovered, failed (see sequences.parquet), "
        "already done, errored (crashed tasks, retried next run); tracks and frames written",
    )
    failures = summary["failures"]
    if failures:
        create_table_artifact(
            table=failures,
            key=FAILURES_KEY,
            description="recover-archive: clips that failed in this run and why",
        )
        for failure in failures[:MAX_FAILURES_SHOWN]:
            logger.warning("failed %s: %s", failure["clip"], failure["reason"])


def run_recover(
    input: str,
    output: str,
    *,
    workers: int | None = None,
    dask_address: str | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Run :func:`recover_archive` on local threads or on an existing Dask cluster.

    Args:
        input, output, options: as :func:`recover_archive`.
        workers: local threads (default one per CPU); ignored with ``dask_address``.
        dask_address: scheduler address of a running Dask cluster (``tcp://host:8786``);
            the tasks then run on its workers, which must reach the same Prefect API
            (``PREFECT_API_URL``), the input, the checkpoint and the archive folder.

    Raises:
        FileNotFoundError, ValueError: bad arguments (:func:`plan_recovery`), before any
            flow run starts.
    """
    plan_options = {k: v for k, v in options.items() if k not in ("retry_failed", "show_progress")}
    plan_recovery(input, output, workers=workers, **plan_options)
    if dask_address:
        from prefect_dask import DaskTaskRunner

        runner: Any = DaskTaskRunner(address=dask_address)
    else:
        runner = ThreadPoolTaskRunner(max_workers=workers or default_workers())
    return recover_archive.with_options(task_runner=runner)(input=input, output=output, **options)
