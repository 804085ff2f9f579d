"""`--mode=explore`: a Gradio page on an export: sample grid, picks, walks, arithmetic, sliders, image to z.

The page only wires widgets to `logic.py`'s functions; it needs the SavedModel and Gradio (the optional
extra `pip install -e '.[explore]'`), nothing of the training code. A handler's bad input shows its one
sentence in the page's status line.
"""

import os
import socket
import tempfile
from typing import Any

import numpy as np
from absl import logging

from dcgan_tf import export, images
from dcgan_tf.config import Config, ConfigError
from dcgan_tf.explore import logic as explore

WALK_STEPS = 8
MISSING_GRADIO = "--mode=explore needs Gradio, which is not installed: pip install -e '.[explore]'."


def _gradio():
    try:
        import gradio  # noqa: PLC0415
    except ImportError:
        raise ConfigError(MISSING_GRADIO) from None
    return gradio


def check_port(host: str, port: int) -> None:
    """ConfigError with one sentence if the page could not listen on host:port."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        raise ConfigError(f'--host={host} is not an address of this machine (try 127.0.0.1).') from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        try:
            probe.bind(address)
        except OSError as e:
            raise ConfigError(
                f'--port={port} on {host} cannot be used ({e.strerror}); pick another one with --port.'
            ) from None


def _display(picture: np.ndarray) -> np.ndarray:
    """[H, W, 1] -> [H, W]: Gradio shows a one-channel array as grey only without the channel axis."""
    return picture[..., 0] if picture.shape[-1] == 1 else picture


def _gallery(pictures: np.ndarray, labels: list[str] | None = None) -> list:
    big = [_display(p) for p in explore.enlarge(pictures)]
    return list(zip(big, labels, strict=True)) if labels else big


def _problem(message: object) -> str:
    return f'**{message}**'  # Bold in the status line.


def build_app(generator: export.LoadedGenerator, title: str, seed: int = 0):
    """The page as a gradio.Blocks (not launched); `title` names the export in its header."""
    gr = _gradio()
    meta = generator.metadata
    basis = explore.directions(generator.z_dim)
    # The walks' GIFs, until Gradio has copied them into its cache; the folder goes with the page.
    gifs = tempfile.TemporaryDirectory(prefix='dcgan_explore_')
    work = gifs.name
    can_invert = generator.generate_float is not None

    # --- handlers: (state in) -> (widgets out), each catching bad input into the status line ---

    def show_grid(seed_value):
        try:
            seed_value = int(seed_value)
            pictures, z = explore.sample_grid(generator, seed_value)
        except (ConfigError, TypeError, ValueError) as e:
            return gr.update(), None, _problem(e)
        labels = [str(i) for i in range(len(pictures))]
        state = {'seed': seed_value, 'z': z, 'images': pictures}
        return _gallery(pictures, labels), state, f'Seed {seed_value}: {len(pictures)} samples.'

    def new_seed(seed_value):
        value = int(seed_value or 0) + 1
        return (value, *show_grid(value))

    def pick(grid, picks, evt: gr.SelectData):
        if grid is None:
            return picks, gr.update(), _problem('Draw a grid first.')
        index = int(evt.index)
        try:
            picks = explore.toggle_pick(picks, f'seed {grid["seed"]} #{index}', grid['z'][index])
        except ConfigError as e:
            return picks, gr.update(), _problem(e)
        return picks, _picks_gallery(picks), f'{len(picks)} picked.'

    def _picks_gallery(picks):
        if not picks:
            return []
        pictures = generator.generate(np.stack([p.z for p in picks]))
        return _gallery(pictures, [f'{i + 1}: {p.key}' for i, p in enumerate(picks)])

    def clear_picks():
        return [], [], 'Picks cleared.'

    def run_walk(picks, steps, spherical):
        try:
            frames, _ = explore.walk(generator, picks, int(steps), spherical == 'slerp')
        except ConfigError as e:
            return gr.update(), gr.update(), gr.update(), gr.update(), None, _problem(e)
        with tempfile.NamedTemporaryFile(dir=work, prefix='walk_', suffix='.gif', delete=False) as f:
            path = explore.write_gif(f.name, frames)
        big = _gallery(frames)
        slider = gr.update(minimum=0, maximum=len(frames) - 1, value=0, interactive=True)
        message = f'Walk of {len(frames)} frames from pick 1 to pick 2.'
        return big, slider, big[0], gr.update(value=path, visible=True), frames, message

    def show_frame(frames, t):
        if frames is None or len(frames) == 0:
            return gr.update()
        return _gallery(frames[int(t) : int(t) + 1])[0]

    def set_group(name, picks, groups):
        if not picks:
            return (
                groups,
                gr.update(),
                [],
                [],
                _problem(f'Pick samples first, then "Set {name}".'),
            )
        groups = {**groups, name: list(picks)}
        sizes = ', '.join(f'{k}: {len(groups.get(k, []))}' for k in 'ABC')
        return groups, _groups_text(groups), [], [], f'Group {name} set ({sizes}).'

    def _groups_text(groups):
        return ' | '.join(f'**{k}**: {", ".join(p.key for p in groups.get(k, [])) or "empty"}' for k in 'ABC')

    def run_arithmetic(groups, scale):
        try:
            result = explore.arithmetic(generator, groups, float(scale))
        except ConfigError as e:
            return gr.update(), gr.update(), _problem(e)
        means = _gallery(result['means'], ['mean A', 'mean B', 'mean C'])
        grid = images.make_grid(explore.enlarge(result['images']), rows=3, pad_value=255)
        return means, _display(grid), 'A - B + C in the centre, 8 perturbed copies around it.'

    def move_along(picks, *amounts):
        if not picks:
            return gr.update(), _problem('Pick a sample first: the sliders move the last pick.')
        picture = generator.generate(explore.move(picks[-1].z, basis, list(amounts)))
        return _gallery(picture)[0], (
            f'Moved pick {len(picks)} by {", ".join(f"{a:+.1f}" for a in amounts)}.'
        )

    def invert(upload, picks):
        if not can_invert:
            return gr.update(), picks, gr.update(), _problem(_OLD_EXPORT)
        if upload is None:
            return gr.update(), picks, gr.update(), _problem('Upload an image first.')
        try:
            result = explore.image_to_z(generator, upload)
        except ConfigError as e:
            return gr.update(), picks, gr.update(), _problem(e)
        labels = [f'{s}: {e:.2g}' for s, e in zip(result['snapshot_steps'], result['errors'], strict=True)]
        trajectory = _gallery(
            np.concatenate([result['target'][None], result['trajectory']]), ['target', *labels]
        )
        picks = [*picks, explore.Pick(f'image #{len(picks) + 1}', result['z'])][-explore.MAX_PICKS :]
        message = f'Found z with mean squared pixel error {result["errors"][-1]:.3g}; added it to the picks.'
        return trajectory, picks, _picks_gallery(picks), message

    # --- the page ---

    def gallery(label: str, columns: int, height: int, elem_id: str):
        return gr.Gallery(
            label=label,
            columns=columns,
            height=height,
            fit_columns=False,
            allow_preview=False,
            format='png',
            elem_id=elem_id,
        )

    # delete_cache: Gradio's copies of the pictures shown go after an hour, and all of them at shutdown.
    with gr.Blocks(title='dcgan_tf explorer', analytics_enabled=False, delete_cache=(3600, 3600)) as app:
        app.gif_folder = gifs  # Removed with the app (TemporaryDirectory's finaliser).
        grid_state = gr.State(None)
        picks_state = gr.State([])
        groups_state = gr.State({})
        frames_state = gr.State(None)
        gr.Markdown(
            f'## dcgan_tf explorer\n`{title}`: step {meta.get("step")}, z_dim {generator.z_dim}, '
            f'{meta.get("resolution")}x{meta.get("resolution")}x{meta.get("channels")}. '
            'Click samples to pick them (click again to drop one).'
        )
        status = gr.Markdown('', elem_id='status')
        with gr.Row():
            seed_box = gr.Number(value=seed, precision=0, label='seed', elem_id='seed', minimum=0)
            new_seed_button = gr.Button('new seed', elem_id='new_seed', variant='primary')
            clear_button = gr.Button('clear picks', elem_id='clear_picks')
        grid = gallery('samples (click to pick)', 8, 330, 'grid')
        picks_view = gallery('picks, in order', 12, 140, 'picks')
        gr.Markdown('### Walk from pick 1 to pick 2')
        with gr.Row():
            steps = gr.Slider(2, 32, value=WALK_STEPS, step=1, label='frames')
            path = gr.Radio(['slerp', 'lerp'], value='slerp', label='path')
            walk_button = gr.Button('walk', elem_id='walk', variant='primary')
            gif = gr.DownloadButton('download GIF', visible=False, elem_id='walk_gif')
        frames_view = gallery('frames', 8, 180, 'frames')
        with gr.Row():
            frame_slider = gr.Slider(0, WALK_STEPS - 1, value=0, step=1, label='frame', interactive=False)
            frame_view = gr.Image(label='frame', format='png', interactive=False, elem_id='frame', height=140)
        gr.Markdown('### Vector arithmetic: A - B + C (pick samples, then set a group)')
        with gr.Row():
            set_buttons = {name: gr.Button(f'Set {name}', elem_id=f'set_{name}') for name in 'ABC'}
            scale = gr.Slider(0.0, 1.0, value=0.25, step=0.05, label='perturbation (paper: 0.25)')
            arithmetic_button = gr.Button('A - B + C', elem_id='arithmetic', variant='primary')
        groups_view = gr.Markdown(_groups_text({}))
        with gr.Row():
            means_view = gallery('group means', 3, 200, 'means')
            result_view = gr.Image(
                label='A - B + C', format='png', interactive=False, elem_id='arithmetic_result', height=360
            )
        gr.Markdown('### Move the last pick along fixed random directions')
        with gr.Row():
            sliders = [
                gr.Slider(-3.0, 3.0, value=0.0, step=0.1, label=f'direction {i + 1}')
                for i in range(len(basis))
            ]
            moved_view = gr.Image(label='moved', format='png', interactive=False, height=140)
        gr.Markdown('### Image to z: the z whose sample is closest to your image')
        if not can_invert:
            gr.Markdown(f'**{_OLD_EXPORT}**', elem_id='invert_unsupported')
        with gr.Row():
            upload = gr.Image(
                label=f'your image ({meta.get("resolution")}x{meta.get("resolution")})',
                image_mode=None,
                type='numpy',
                sources=['upload', 'clipboard'],
                height=160,
                elem_id='upload',
            )
            invert_button = gr.Button('find z', elem_id='invert', variant='primary', interactive=can_invert)
        trajectory_view = gallery(
            'target, then the trajectory (step: mean squared pixel error)', 9, 160, 'trajectory'
        )

        # --- wiring ---
        app.load(show_grid, [seed_box], [grid, grid_state, status])
        seed_box.submit(show_grid, [seed_box], [grid, grid_state, status])
        new_seed_button.click(new_seed, [seed_box], [seed_box, grid, grid_state, status])
        grid.select(pick, [grid_state, picks_state], [picks_state, picks_view, status])
        clear_button.click(clear_picks, None, [picks_state, picks_view, status])
        walk_button.click(
            run_walk,
            [picks_state, steps, path],
            [frames_view, frame_slider, frame_view, gif, frames_state, status],
        )
        frame_slider.change(show_frame, [frames_state, frame_slider], [frame_view])
        for name, button in set_buttons.items():
            button.click(
                lambda p, g, n=name: set_group(n, p, g),
                [picks_state, groups_state],
                [groups_state, groups_view, picks_state, picks_view, status],
            )
        arithmetic_button.click(run_arithmetic, [groups_state, scale], [means_view, result_view, status])
        for slider in sliders:
            slider.release(move_along, [picks_state, *sliders], [moved_view, status])
        invert_button.click(invert, [upload, picks_state], [trajectory_view, picks_state, picks_view, status])
    return app


_OLD_EXPORT = (
    'This export is older than image-to-z (it has no generate_float function): export the run again '
    'with --mode=export --workdir=RUN to use it.'
)


def launch(app, host: str, port: int, block: bool) -> str:
    """Starts the page's server; returns its URL. `block=False` returns at once (tests)."""
    check_port(host, port)
    try:
        app.launch(
            server_name=host,
            server_port=port,
            share=False,
            quiet=True,
            prevent_thread_lock=not block,
            footer_links=[],
        )
    except OSError as e:  # Taken between the check and the launch.
        raise ConfigError(
            f'--port={port} on {host} cannot be used ({e}); pick another one with --port.'
        ) from None
    return f'http://{host}:{port}/'


def serve(saved_model: str, cfg: Config) -> dict[str, Any]:
    """`--mode=explore`: serves the page for the export at `saved_model` on --host:--port until Ctrl-C."""
    _gradio()  # Both one-sentence errors before the export is loaded.
    check_port(cfg.host, cfg.port)
    generator = export.load(saved_model, cfg.sampler)
    # The run folder and the export's, enough to tell runs apart without the machine's whole path.
    title = '/'.join(os.path.normpath(saved_model).split(os.sep)[-2:])
    if (
        generator.num_classes
    ):  # A conditional export is explored one class at a time (--label, else the first).
        generator = export.ClassGenerator(generator, max(cfg.label, 0))
        title = f'{title}, class {generator.class_name}'
    elif cfg.label >= 0:
        raise ConfigError(f'{saved_model} is an unconditional generator: it takes no --label; drop it.')
    app = build_app(generator, title, cfg.seed)
    logging.info(
        'Serving the explorer of %s on http://%s:%d/ (Ctrl-C stops it).', saved_model, cfg.host, cfg.port
    )
    url = launch(app, cfg.host, cfg.port, block=True)
    return {'url': url}
