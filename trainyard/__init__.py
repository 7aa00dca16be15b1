"""trainyard's composition root: the `trainyard` console script (`python -m trainyard`).

It sees every package (cluster, jobs, tuning, serving) and nothing imports it back. Each package contributes its
subcommands through its own ``commands.register(subparsers, kit)``; the shared pieces a command needs (common
options, loading the spec, connecting to Ray, progress lines) come in through ``kit``, never by importing this
package. ``trainyard.cli.main`` turns every ``cluster.errors.TrainyardError`` into its exit code, in one place.
"""
