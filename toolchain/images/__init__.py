"""Moving images between Docker engines: the layer under ``package``, ``deploy``, ``build --on`` and ``bench --on``.

One module per job: :mod:`~toolchain.images.tags` (image and container names), :mod:`~toolchain.images.architecture`
(whether an engine runs an image's CPU), :mod:`~toolchain.images.ensure` (an image on an engine, pulled if missing),
:mod:`~toolchain.images.save` (``docker save``), :mod:`~toolchain.images.tarball` (what a saved tarball holds),
:mod:`~toolchain.images.layers` (which layers an engine lacks), :mod:`~toolchain.images.load` (partial and full
``docker load``), :mod:`~toolchain.images.registries`, :mod:`~toolchain.images.push` and
:mod:`~toolchain.images.manifest` (a registry: push, and read the manifest back), :mod:`~toolchain.images.pull`
(an engine pulls by digest), :mod:`~toolchain.images.transfer` (load or pull, retried, counted) and
:mod:`~toolchain.images.outcome` (what a transfer cost, and how it failed).

It imports neither ``toolchain.package`` nor ``toolchain.deploy`` (both build on it, so neither needs the other)
nor the CLI; the roadside runtime ships none of it.
"""
