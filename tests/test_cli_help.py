"""Every facevec command explains itself."""

from __future__ import annotations

from click.testing import CliRunner

from facevec.cli import cli


def test_every_command_has_help_text():
    runner = CliRunner()
    result = runner.invoke(cli, ["--help"])
    assert result.exit_code == 0
    for name, command in cli.commands.items():
        assert command.help and command.help.strip(), name
        result = runner.invoke(cli, [name, "--help"])
        assert result.exit_code == 0, name
        assert "Usage: " in result.output and "--help" in result.output
        assert command.help.split("\n")[0][:30] in result.output
        for sub_name, sub in getattr(command, "commands", {}).items():
            assert sub.help and sub.help.strip(), f"{name} {sub_name}"
            result = runner.invoke(cli, [name, sub_name, "--help"])
            assert result.exit_code == 0, f"{name} {sub_name}"
            assert sub.help.split("\n")[0][:30] in result.output


def test_expected_commands_exist():
    expected = {"index", "find", "verify", "info", "reindex", "copy", "extension-path", "serve"}
    expected |= {"identify", "calibrate", "people"}
    expected |= {"export", "import", "spark", "watch"}
    assert expected == {name for name, c in cli.commands.items() if not c.hidden}
    people = {"cluster", "list", "show", "name", "merge", "split", "move", "reject"}
    people |= {"confirm", "undo", "history"}
    assert people == {n for n, c in cli.commands["people"].commands.items() if not c.hidden}


def test_extension_path_prints_the_loadable_path():
    import facevec

    result = CliRunner().invoke(cli, ["extension-path"])
    assert result.exit_code == 0
    assert result.output.strip() == facevec.loadable_path()


def test_index_and_watch_declare_their_shared_options_once():
    """An option both commands take reads and behaves the same in both."""
    index = {p.name: p for p in cli.commands["index"].params}
    watch = {p.name: p for p in cli.commands["watch"].params}
    # The gallery and engine options default differently (watch: the gallery's own).
    shared = (set(index) & set(watch)) - {"db", "model_name", "detector_backend", "quiet"}
    assert {"workers", "batch_size", "max_pixels", "min_face"} <= shared
    for name in sorted(shared):
        a, b = index[name], watch[name]
        assert (a.opts, a.help, a.default, repr(a.type)) == (
            b.opts,
            b.help,
            b.default,
            repr(b.type),
        ), name
