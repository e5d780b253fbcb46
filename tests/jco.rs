// Being written (jco second-host test).
