"""The commands of ``%torchserve``, one module each.

A command module has ``HELP`` (one line, shown by ``--help``), ``add_arguments(parser)``
(its argparse options) and ``run(args, user)`` (a thin call into :mod:`jupyter_torchserve.api`
or :mod:`jupyter_torchserve.deployment`, returning what the cell shows). The table that puts
them in order is ``COMMANDS`` in :mod:`jupyter_torchserve.magics`: a new command is a new
module here and one line there. This file imports nothing, so that a command module
importing its siblings never runs back into the table.
"""
