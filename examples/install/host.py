"""A Python host outside the cpex repository, on an installed cpexrt (README, "Install"):
it loads cpex.yaml, asks about two tools and prints the answers."""

from __future__ import annotations

from cpexrt.host import PluginManager, load_library


def main() -> None:
    print("libcpex layout:", load_library().build_info["layout"])
    with PluginManager() as manager:
        manager.load_config_file("cpex.yaml")
        manager.initialize()
        for tool in ("search", "delete_everything"):
            res = manager.invoke("tool_pre_invoke", {"tool_name": tool})
            if res.violation is not None:
                print(f"{tool}: denied by {res.violation.plugin_name} ({res.violation.code})")
            else:
                print(f"{tool}: allowed (plugins ran on Python at {res.metadata['python_prefix']})")


if __name__ == "__main__":
    main()
