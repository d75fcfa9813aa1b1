"""The installed ``psic`` command: loads the plugins, then runs the core CLI with ``psic plugins`` added.

The core's CLI (``psic_core.cli``) never imports the plugins; this entry point is where they meet, so weights,
backbones and VLPs that plugins provide work from every subcommand.
"""

from __future__ import annotations

import sys

from psic_core import cli as core_cli

from . import image_libraries, install_autoload, list_plugins, load_codec_plugins, load_vlp_plugins, uninstall_autoload

#: subcommands that resolve VLP names (loading VLP plugins imports torch and open_clip, so only these pay for it)
_VLP_COMMANDS = {"train", "eval", "demo"}


def cmd_plugins(args) -> int:
    if args.install_autoload or args.uninstall_autoload:
        action = install_autoload if args.install_autoload else uninstall_autoload
        for path in action():
            print(("wrote " if args.install_autoload else "removed ") + str(path))
        return 0
    for p in list_plugins():
        print(f"{p['name']:<24} {p['version'] or '-':<10} {', '.join(p['hooks']) or '-'}")
    print("image libraries:", ", ".join(image_libraries()))
    return 0


def add_plugins_command(sub) -> None:
    p = sub.add_parser("plugins", help="list psic plugins; install the start-up hook for Pillow/imageio")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--install-autoload", action="store_true",
                       help="register .psic with Pillow/imageio in every interpreter of this environment")
    group.add_argument("--uninstall-autoload", action="store_true")
    p.set_defaults(func=cmd_plugins)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    load_codec_plugins()
    if argv[:1] and argv[0] in _VLP_COMMANDS:
        load_vlp_plugins()
    return core_cli.main(argv, extend=add_plugins_command)


if __name__ == "__main__":
    sys.exit(main())
