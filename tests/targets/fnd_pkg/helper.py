VALUE = "helper-from-fnd_pkg"
