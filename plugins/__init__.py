"""microfw's built-in plugins, installed as ``microfw_plugins`` and loaded through the
``microfw`` entry-point group exactly like a third-party package."""
