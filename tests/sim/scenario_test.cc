// scenario tests: see below
