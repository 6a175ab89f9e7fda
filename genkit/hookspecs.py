"""The hooks a genkit plugin can implement.

Each ``register_*`` hook receives a ``register`` callback and calls it once per component::

    @genkit.hookimpl
    def register_models(register):
        register("my-model", build_my_model, description="...")

The callback's signature is ``register(name: str, factory: Callable, *, description: str = "",
flags: Sequence[str] | Mapping[str, str] = ())`` (models also take ``default_loss`` and
``train_defaults``); ``description`` defaults to the first line of
the factory's docstring; ``flags`` names options that get a short CLI flag of their own
(``flags=("beta",)`` → ``--beta``; ``{"mode": "--conditioning"}`` to name it differently), with
the help text of the option's ``:param name:`` line in the factory's docstring. A factory is called later,
only when the component is used, with the arguments listed in each hook's docstring plus the
user's options; the options it accepts are read from its signature, so a factory declares them as
keyword parameters with defaults (JSON-compatible values, since they are stored in config.json).
A name another plugin already registered is refused and reported, naming both plugins.
The reference with examples is docs/hooks.md.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("genkit")
hookimpl = pluggy.HookimplMarker("genkit")


@hookspec
def register_datasets(register):
    """Register dataset sources.

    :param register: ``register(name, factory, *, description="", flags=())``.

    ``factory(**options)`` returns a :class:`genkit.DatasetSource`: an object with
    ``name``, ``description``, ``default_image_size`` (H, W), ``needs_root`` (True when the user
    must pass ``--root``), ``obtain_hint`` (where to get the files, shown when ``--root`` is
    missing), and ``scan(root: Path | None) -> genkit.SourceIndex``,
    which lists the images, their attribute vectors and names, the splits, a picklable reader
    and a fingerprint of the source files (and, optionally, ``exclusive_groups``: the ``group``
    prefixes of ``group::value`` families that hold exactly one value per image). ``scan`` is where the attribute names become known:
    ``genkit.plan_run`` calls it before anything else is built (reading annotations, decoding no
    image), so keep it free of heavy work. genkit decodes the images once into its HDF5 cache and
    trains from that.
    """


@hookspec
def register_conditioners(register):
    """Register conditioners: how an attribute vector enters a model.

    :param register: ``register(name, factory, *, description="", flags=(), older_runs=None)``;
        ``older_runs`` gives options added later the values runs saved before them meant
        (``{"partial": False}``), while new plans get the factory's defaults (any kind may declare it).

    ``factory(attribute_names: list[str], **options)`` (the first parameter passed by position, and
    named ``attribute_names``) returns a :class:`genkit.Conditioner`
    (a ``torch.nn.Module``) with ``attribute_names``, ``dim`` (the length of the condition
    vector) and ``encode(spec) -> Tensor`` (``"A,B,-C"`` to a vector). A model uses whichever
    of these forms it needs: ``input_layer(image_channels, out_channels, kernel_size, stride=1,
    padding=0)`` (a first encoder layer taking ``(images, condition)``) and ``join_latent(z,
    condition) -> Tensor`` with ``latent_extra_dim`` extra features (a decoder input), for
    models that tile or join the condition; ``vector(condition) -> Tensor (B, vector_dim)``
    (plain features for a model that embeds the condition) and ``null_condition(n) -> Tensor
    (n, dim)`` (the condition that gives no attribute, for classifier-free guidance). For partial
    conditions: ``encode_partial(spec) -> Tensor`` (attributes not named unspecified, −1) and
    ``drop(condition, probability, generator=None)`` (each unit, a ``group::`` family or a plain
    attribute, unspecified with that probability, independently: training), with a ``vector`` that
    tells on, off and unspecified apart. A model that needs a form the conditioner lacks is refused
    when the run is planned.
    """


@hookspec
def register_models(register):
    """Register generative models.

    :param register: ``register(name, factory, *, description="", flags=(), default_loss=None,
        train_defaults=None)``; ``default_loss`` names the loss the model trains with when the
        user names none, ``train_defaults`` the training settings it trains best with
        (``{"ema": 0.999}``; any :class:`genkit.TrainSpec` field), used where the user gives none.

    ``factory(image_shape: tuple[int, int, int], conditioner: Conditioner, **options)`` (the first
    two passed by position, and named ``image_shape`` and ``conditioner``) returns a
    :class:`genkit.Model` (a ``torch.nn.Module``). What every model has: ``forward(images,
    condition)``, whose output only its loss reads (genkit never looks inside), ``noise_shape``
    (the shape of one sample's noise: ``(latent_dim,)`` for a VAE, ``(C, H, W)`` for a flow) and
    ``sample(condition, noise=None, generator=None, *, <sampling options>)`` returning images in
    [0, 1] from noise ~ N(0, I) of that shape. Its keyword parameters with defaults after
    ``generator`` are its sampling options (a CVAE's ``temperature``, a flow's ``guidance`` and
    ``steps``): flags of ``genkit sample``/``evaluate``/``serve``, controls of the page,
    ``Run.sample`` keywords and ``genkit sweep --vary sample.NAME``; help from ``sample``'s
    ``:param name:`` lines; ``sampling_flags = {"steps": "--sampling-steps"}`` renames a flag;
    ``check_sampling_options(**options)`` may refuse values (raise ``genkit.UsageError``).
    What a model may have, found by its methods (:mod:`genkit.sampling.capabilities`): a posterior,
    ``encode(images, condition) -> (mu, logvar)`` and ``decode(z, condition)`` (with
    ``prior_params(condition) -> (mu, logvar)`` for a conditional prior), which gives the
    likelihood bounds of ``genkit evaluate``, ``genkit reconstruct`` and editing by encoding;
    ``invert(images, condition, **sampling options) -> noise``, a deterministic sampler run
    backwards; ``log_likelihood(images, condition, generator=None) -> (B,)``, its own; and, declared
    by ``partial_conditions = True`` because no method shows it, conditions with attributes left
    unspecified (trained with the conditioner's ``drop``), which gives ``rest="model"``. A
    capability a model lacks is reported as absent (``null`` metrics, a one-line refusal).
    A model may own its training step instead of the bundled one (forward, loss, one Adam):
    ``optimizers(lr, model) -> dict[str, Optimizer]`` and ``training_step(images, condition,
    step: genkit.TrainingStep) -> LossResult`` (``step.update(name, loss)`` for each update), with
    optionally ``validation_step``, ``headline`` and ``training_only`` (submodules kept out of
    the run's weights); it then needs no ``forward``. See :mod:`genkit.training.step`.
    """


@hookspec
def register_losses(register):
    """Register training losses.

    :param register: ``register(name, factory, *, description="", flags=())``.

    ``factory(**options)`` returns a :class:`genkit.Loss`: a callable
    ``loss(output, images: Tensor) -> LossResult``, where ``output`` is whatever the model's
    ``forward`` returned (a :class:`genkit.ModelOutput` for the bundled CVAE), whose ``total`` is
    minimised and whose ``terms`` (a ``dict[str, Tensor]`` of scalars, for example ``mse`` and
    ``kl``) are logged separately. A loss that reads a field the model's output lacks is refused
    for that model when the run is planned (the pair is tried once on PyTorch's meta device).

    A loss may be a ``torch.nn.Module`` that owns parameters (a learned decoder σ, say): genkit
    moves it to the training device, trains its parameters with the model's in one optimizer
    (averaging their gradients over DDP processes), and, when its ``state_dict()`` is not empty,
    saves it as ``loss.safetensors`` in the run folder and in every checkpoint, restores it on
    ``--resume`` and in ``genkit.load_run``. It may also define ``warnings() -> list[str]``:
    called once at the end of every training epoch, its messages go into the epoch's record
    (``"warnings"`` in metrics.jsonl) and are printed in the epoch line. A loss may own the
    training step, with the same methods a model would (see ``register_models``); a model's are
    preferred. A loss whose step does the work (a GAN's objective) need not be callable.
    """


@hookspec
def register_classifiers(register):
    """Register attribute classifiers: the judges of ``genkit evaluate``'s attribute accuracy.

    :param register: ``register(name, factory, *, description="", flags=())``.

    ``factory(image_shape: tuple[int, int, int], attribute_names: list[str], **options)``
    returns a ``torch.nn.Module`` whose ``forward(images)`` takes images in [0, 1] of shape
    ``(B, *image_shape)`` and returns one logit per attribute, ``(B, len(attribute_names))``;
    a logit above 0 means the attribute is present. genkit trains it on the real training split
    and caches it beside the dataset's cache. Optionally ``features(images)`` returns its
    penultimate layer, ``(B, F)``; ``genkit evaluate`` computes its Fréchet distances ``fd`` and
    ``fd_floor`` on those features (and reports none without them).
    """


@hookspec
def register_commands(cli):
    """Add commands to the ``genkit`` command line.

    :param cli: the root :class:`typer.Typer` application; add commands with
        ``@cli.command()`` or sub-applications with ``cli.add_typer(...)``.

    Called each time the CLI is built. A command that raises :class:`genkit.UsageError` exits 2
    with its one-line message, like the built-in commands.
    """
