"""The page: a Generate tab (prompt, config, live progress, the result) and a Gallery tab.

Every piece of work goes through the command line's code: a run is ``dreamfusion run`` in a
child process (``runner.Runner``), a re-export is ``dreamfusion export``. The page polls the
run once a second while one is going (a ``gr.Timer``), so a reloaded or second tab shows the
same run.
"""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

# no usage statistics or version checks: the app must work, and stay silent, offline
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import gradio as gr  # noqa: E402

from ..config import bundled_configs, load_config, registry  # noqa: E402
from ..errors import UserError, error_line  # noqa: E402
from ..guidance.toy.captions import vocabulary  # noqa: E402
from ..pipeline.runlog import duration  # noqa: E402
from .gallery import FinishedRun, finished_runs, obj_zip, read_run  # noqa: E402
from .runner import Runner, Snapshot  # noqa: E402

TICK_SECONDS = 1.0
TOY_EXAMPLES = ["a red cube", "a yellow duck", "a blue torus", "a green cylinder, side view"]


def status_text(s: Snapshot) -> str:
    """One line: where the run is, or how it ended."""
    if s.state == "idle":
        return "No run yet: type a prompt and press Generate."
    where = f" in {s.run_dir}" if s.run_dir else ""
    if s.state == "starting":
        return f"Starting {s.prompt!r}: checking the input and loading the prior..."
    if s.active:
        pct = 100 * s.step / max(1, s.total)
        loss = f" · loss {s.loss:.4g} · t {s.t:.2f}" if s.loss is not None else ""
        eta = f" · ETA {duration(s.eta_seconds)}" if s.eta_seconds is not None else ""
        verb = "Stopping at the end of the step" if s.state == "stopping" else "Training"
        if s.state == "running" and s.step >= s.total:
            return f"Writing the turntable, the meshes and the scores of {s.prompt!r}{where}"
        return f"{verb} {s.prompt!r}: step {s.step}/{s.total} ({pct:.0f}%){loss}{eta}{where}"
    return {"finished": "Finished: ", "stopped": "Stopped: ", "failed": ""}[s.state] + s.message


def _downloads(run: FinishedRun, scratch: Path) -> list[str]:
    files = [run.glb, obj_zip(run, scratch), run.ply]
    return [str(p) for p in files if p is not None]


def result_outputs(run: FinishedRun | None, scratch: Path) -> tuple[Any, Any, Any, Any]:
    """The viewer's GLB, the turntable, the metrics table and the downloads of ``run``."""
    if run is None:
        return None, None, [], None
    return (str(run.glb) if run.glb else None, str(run.turntable) if run.turntable else None,
            run.metrics_rows(), _downloads(run, scratch))


class App:
    """The callbacks, around one ``Runner``; ``scratch`` holds the zips made for download."""

    def __init__(self, root: Path, scratch: Path) -> None:
        self.root, self.scratch = root, scratch
        self.runner = Runner(root)

    # -- the Generate tab ------------------------------------------------------------------
    def config_changed(self, config: str) -> tuple[Any, ...]:
        """Defaults of the chosen config, and the toy vocabulary when its prior is a toy."""
        try:
            cfg = load_config(config)
        except UserError as exc:
            return gr.skip(), gr.skip(), gr.skip(), gr.update(visible=False), error_line(str(exc))
        toy = registry.prior(cfg.guidance.prior).ground_truth
        return (int(cfg.seed), int(cfg.steps), str(cfg.device), gr.update(visible=toy), "")

    def generate(self, prompt: str, config: str, seed: float | None, steps: float | None,
                 device: str, extra: str) -> tuple[Any, ...]:
        """Start a run (clearing the last one's result from the page); bad input is the CLI's
        one-line message, and the app goes on."""
        try:
            overrides = [f"seed={_whole(seed, 'seed')}", f"steps={_whole(steps, 'steps')}",
                         f"device={device}", *_split(extra)]
            self.runner.start(prompt or "", (config or "").strip(), overrides)
        except UserError as exc:
            return (error_line(str(exc)), *(gr.skip(),) * 5,
                    gr.Timer(active=self.runner.snapshot().active))
        return (status_text(self.runner.snapshot()), None, *result_outputs(None, self.scratch),
                gr.Timer(active=True))

    def stop(self) -> str:
        if self.runner.stop():
            return status_text(self.runner.snapshot())
        return "No run is going."

    def poll(self) -> tuple[Any, ...]:
        """Status, newest validation strip and run output; the result once the run has ended
        (then the timer stops)."""
        s = self.runner.snapshot()
        val = str(s.val_image) if s.val_image else None
        log = "\n".join(s.log)
        if s.active:
            return (status_text(s), val, log, gr.skip(), gr.skip(), gr.skip(), gr.skip(),
                    gr.Timer(active=True))
        run = read_run(s.run_dir) if s.state == "finished" and s.run_dir else None
        return (status_text(s), val, log, *result_outputs(run, self.scratch),
                gr.Timer(active=False))

    # -- the Gallery tab -------------------------------------------------------------------
    def gallery_choices(self) -> Any:
        runs = finished_runs(self.root)
        choices = [(r.label, str(r.run_dir)) for r in runs]
        return gr.update(choices=choices, value=choices[0][1] if choices else None)

    def open_run(self, run_dir: str | None) -> tuple[Any, ...]:
        """The run's result, and its export sizes as the re-export's starting values."""
        run = read_run(Path(run_dir)) if run_dir else None
        sizes = run.export_sizes() if run is not None else (None, None)
        return (*result_outputs(run, self.scratch),
                *(gr.skip() if size is None else size for size in sizes))

    def reexport(self, run_dir: str | None, resolution: float | None,
                 texture_size: float | None) -> tuple[Any, ...]:
        """``dreamfusion export RUN --resolution R --texture-size T``, then show the result
        (the sizes stay as the user typed them)."""
        sizes_as_typed = (gr.skip(), gr.skip())
        if not run_dir:
            return ("Choose a run first.", *result_outputs(None, self.scratch), *sizes_as_typed)
        try:
            command = [sys.executable, "-m", "dreamfusion", "export", run_dir,
                       "--resolution", str(_whole(resolution, "resolution")),
                       "--texture-size", str(_whole(texture_size, "texture size"))]
        except UserError as exc:
            return (error_line(str(exc)), *(gr.skip(),) * 4, *sizes_as_typed)
        done = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              encoding="utf-8", errors="replace")
        lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
        message = lines[-1] if lines else f"export exited with code {done.returncode}"
        return (message, *result_outputs(read_run(Path(run_dir)), self.scratch), *sizes_as_typed)


    def refine(self, run_dir: str | None) -> tuple[Any, ...]:
        """Start the mesh stage of the chosen run (``dreamfusion refine RUN``); it trains as
        a run does, with its progress on the Generate tab, and joins the gallery when done."""
        if not run_dir:
            return "Choose a run first.", gr.skip()
        try:
            root = self.runner.start_refine(Path(run_dir))
        except UserError as exc:
            return error_line(str(exc)), gr.Timer(active=self.runner.snapshot().active)
        return (f"Refining {run_dir} into {root}: its progress is on the Generate tab, and it "
                f"joins the gallery when it finishes.", gr.Timer(active=True))


def _whole(value: float | None, what: str) -> int:
    if value is None or value != int(value):
        raise UserError(f"{what} must be a whole number, got {value!r}")
    return int(value)


def _split(extra: str) -> list[str]:
    """The "more overrides" box: ``key.sub=value`` words, quoted as in a shell (each word is
    checked by ``load_config``, as the CLI's are)."""
    try:
        return shlex.split(extra or "")
    except ValueError as exc:
        raise UserError(f"cannot read the overrides {extra!r}: {exc}") from None


def build(app: App) -> gr.Blocks:
    """The page; its element ids are what the browser test finds."""
    defaults = load_config("toy")
    with gr.Blocks(title="dreamfusion", analytics_enabled=False) as page:
        gr.Markdown("# dreamfusion\nText to 3D by score distillation. Runs are written under "
                    f"`{app.root}`, like `dreamfusion run` (resumable from the command line).")
        timer = gr.Timer(TICK_SECONDS, active=False)
        with gr.Tab("Generate"):
            with gr.Row():
                with gr.Column(scale=1):
                    prompt = gr.Textbox(label="Prompt", placeholder="a red cube", elem_id="prompt")
                    with gr.Column(visible=True, elem_id="vocabulary") as toy_help:
                        gr.Markdown(f"The toy prior knows {vocabulary()}; a prompt is "
                                    f"'a &lt;colour&gt; &lt;shape&gt;[, &lt;view&gt; view]'.")
                        gr.Examples(TOY_EXAMPLES, inputs=[prompt], label="Try")
                    config = gr.Dropdown(bundled_configs(), value="toy", allow_custom_value=True,
                                         label="Config: a bundled one or a YAML file's path",
                                         elem_id="config")
                    with gr.Row():
                        seed = gr.Number(int(defaults.seed), precision=0, label="Seed",
                                         elem_id="seed")
                        steps = gr.Number(int(defaults.steps), precision=0, label="Steps",
                                          elem_id="steps")
                        device = gr.Dropdown(["auto", "cpu", "cuda"], value=str(defaults.device),
                                             label="Device", elem_id="device")
                    extra = gr.Textbox(label="More config keys (key.sub=value ...)",
                                       placeholder="guidance.guidance_scale=50 output.val_every=50",
                                       elem_id="overrides")
                    with gr.Row():
                        go = gr.Button("Generate", variant="primary", elem_id="generate")
                        stop = gr.Button("Stop", variant="stop", elem_id="stop")
                    # plain text: a message quoting a path or key must not turn into Markdown
                    status = gr.Textbox(status_text(Snapshot()), label="Status", lines=2,
                                        interactive=False, elem_id="status")
                with gr.Column(scale=2):
                    val = gr.Image(label="Newest validation renders", type="filepath",
                                   interactive=False, elem_id="val")
                    viewer, turntable, metrics, files = _result_block("run")
                    with gr.Accordion("Run output", open=False):
                        log = gr.Textbox(lines=12, max_lines=12, show_label=False,
                                         interactive=False, elem_id="log")
        with gr.Tab("Gallery", elem_id="gallery-tab") as gallery_tab:
            with gr.Row():
                runs = gr.Dropdown([], label="Finished runs, newest first", elem_id="runs")
                refresh = gr.Button("Refresh", elem_id="refresh")
            g_viewer, g_turntable, g_metrics, g_files = _result_block("gallery")
            with gr.Row():
                resolution = gr.Number(int(defaults.export.resolution), precision=0,
                                       label="Mesh resolution (marching-cubes grid)")
                texture = gr.Number(int(defaults.export.texture_size), precision=0,
                                    label="Texture size (0: vertex colours)")
                again = gr.Button("Re-export", elem_id="reexport")
                refine = gr.Button("Refine (mesh stage)", elem_id="refine")
            export_status = gr.Textbox("", label="Export and refine", interactive=False,
                                       elem_id="export-status")

        results = [viewer, turntable, metrics, files]
        config.change(app.config_changed, config, [seed, steps, device, toy_help, status])
        go.click(app.generate, [prompt, config, seed, steps, device, extra],
                 [status, val, *results, timer])
        stop.click(app.stop, None, status)
        # no loading overlay on each poll: it would flicker once a second (and cost CPU)
        for event in (timer.tick, page.load):
            event(app.poll, None, [status, val, log, *results, timer], show_progress="hidden")
        g_results = [g_viewer, g_turntable, g_metrics, g_files]
        for event in (refresh.click, gallery_tab.select):
            event(app.gallery_choices, None, runs)
        runs.change(app.open_run, runs, [*g_results, resolution, texture])
        again.click(app.reexport, [runs, resolution, texture],
                    [export_status, *g_results, resolution, texture])
        refine.click(app.refine, runs, [export_status, timer])
    return page


def _result_block(name: str) -> tuple[Any, Any, Any, Any]:
    viewer = gr.Model3D(label="Mesh (drag to orbit, scroll to zoom)", height=420,
                        clear_color=(1.0, 1.0, 1.0, 1.0), elem_id=f"{name}-viewer")
    with gr.Row():
        turntable = gr.Image(label="Turntable", type="filepath", interactive=False,
                             elem_id=f"{name}-turntable")
        metrics = gr.Dataframe(headers=["metric", "value"], value=[], interactive=False,
                               label="Metrics", elem_id=f"{name}-metrics")
    files = gr.File(label="Downloads", file_count="multiple", interactive=False,
                    elem_id=f"{name}-files")
    return viewer, turntable, metrics, files


def serve(host: str, port: int, root: Path) -> int:
    """Serve the page until Ctrl-C (or SIGTERM); a going run is stopped with a checkpoint."""
    import signal
    import time

    with tempfile.TemporaryDirectory(prefix="dreamfusion-app-") as scratch:
        app = App(root, Path(scratch))
        page = build(app)

        def terminate(signum: int, frame: object) -> None:
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, terminate)
        try:
            page.launch(server_name=host, server_port=port, prevent_thread_lock=True,
                        quiet=True, show_error=True, allowed_paths=[str(root.absolute())],
                        footer_links=[])
        except OSError as exc:          # taken between our check and the server's bind
            raise UserError(f"cannot serve on {host}:{port}: {exc}") from None
        print(f"dreamfusion app: open http://{host}:{port}/ (runs under {root}); "
              f"Ctrl-C to quit", file=sys.stderr, flush=True)
        try:
            while True:
                time.sleep(0.5)
        except KeyboardInterrupt:
            print("dreamfusion app: stopping", file=sys.stderr, flush=True)
        finally:
            app.runner.close()
            page.close()
    return 0
