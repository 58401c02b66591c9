// Compiles the test suites' shared precompiled header (cmake/OpenvidTesting.cmake).
