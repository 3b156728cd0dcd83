"""A small package for `dynupdate run -m fnd_pkg.svc`."""
