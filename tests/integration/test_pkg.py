"""The .deb: cpack builds it from the build directory of the binary under test; unpacked into
a scratch root, it holds a tether that runs, its man page and bash completion, and its docs;
its control fields name the package and the libraries it needs."""

import glob
import os
import re
import shutil
import subprocess
import unittest

import harness


def cache_value(build_dir, name):
    with open(os.path.join(build_dir, "CMakeCache.txt")) as f:
        for line in f:
            key, _, value = line.rstrip("\n").partition("=")
            if key.split(":")[0] == name:
                return value
    return None


class PackageTest(harness.TetherTest):
    def setUp(self):
        super().setUp()
        self.build_dir = os.path.dirname(os.path.abspath(harness.tether_bin()))
        self.config = os.path.join(self.build_dir, "CPackConfig.cmake")
        if not os.path.exists(self.config):
            self.skipTest("%s has no CPackConfig.cmake: configure it again with cmake"
                          % self.build_dir)
        for tool in ("dpkg-deb", "dpkg-shlibdeps"):
            self.assertTrue(shutil.which(tool), "%s is missing: scripts/setup installs dpkg-dev"
                            % tool)

    def run_checked(self, argv, timeout, **kw):
        r = subprocess.run(argv, capture_output=True, text=True, timeout=harness.scaled(timeout),
                           **kw)
        self.assertEqual(r.returncode, 0, "`%s` failed:\n%s\n%s"
                         % (" ".join(argv), r.stdout[-4000:], r.stderr[-4000:]))
        return r

    def build_deb(self):
        cpack = cache_value(self.build_dir, "CMAKE_CPACK_COMMAND") or shutil.which("cpack")
        out = self.path("cpack")
        # The build directory is only read (and brought up to date, as cpack always does
        # first); the staging tree and the package go to the scratch directory.
        self.run_checked([cpack, "-G", "DEB", "--config", self.config, "-B", out], 120,
                         cwd=self.build_dir)
        debs = glob.glob(os.path.join(out, "*.deb"))
        self.assertEqual(len(debs), 1, os.listdir(out))
        return debs[0]

    def test_the_deb_holds_a_working_tether_with_its_man_page_and_completion(self):
        version = self.run_tether("--version").stdout.split()[-1]
        deb = self.build_deb()
        self.assertRegex(os.path.basename(deb), r"^tether_%s_[a-z0-9]+\.deb$" % re.escape(version))

        info = self.run_checked(["dpkg-deb", "-I", deb], 30).stdout
        self.assertRegex(info, r"(?m)^ Package: tether$")
        self.assertRegex(info, r"(?m)^ Version: %s$" % re.escape(version))
        self.assertRegex(info, r"(?m)^ Maintainer: \S")
        self.assertRegex(info, r"(?m)^ Description: \S")
        depends = re.search(r"(?m)^ Depends: (.*)$", info)
        self.assertIsNotNone(depends, info)
        for library in ("libc6", "libssl3", "libssh2-1"):
            self.assertIn(library, depends.group(1))

        root = self.path("root")
        self.run_checked(["dpkg-deb", "-x", deb, root], 30)
        usr = os.path.join(root, "usr")
        tether = os.path.join(usr, "bin", "tether")
        r = self.run_checked([tether, "--version"], 10)
        self.assertEqual(r.stdout, "tether %s\n" % version)

        # The man page and the completion are the ones the packaged binary writes itself.
        man = os.path.join(usr, "share", "man", "man1", "tether.1")
        completion = os.path.join(usr, "share", "bash-completion", "completions", "tether")
        for path, args in ((man, ["man"]), (completion, ["completion", "bash"])):
            with self.subTest(path=os.path.relpath(path, root)):
                self.assertTrue(os.path.isfile(path), path)
                with open(path) as f:
                    self.assertEqual(f.read(), self.run_checked([tether, *args], 10).stdout)
        with open(man) as f:
            self.assertIn(".TH TETHER 1", f.read())

        docs = os.path.join(usr, "share", "doc", "tether")
        for doc in ("README.md", "SECURITY.md", os.path.join("docs", "PROTOCOL.md")):
            self.assertTrue(os.path.isfile(os.path.join(docs, doc)), doc)


if __name__ == "__main__":
    unittest.main()
