// Ours, not upstream's: upstream's jest.config.js (roots, testMatch, ts-jest),
// plus resolver.js, which points the suite's imports of its own source at the
// released build (see there).
module.exports = {
  roots: ['<rootDir>/src'],
  testMatch: ['**/__tests__/**/*.+(ts|tsx|js)', '**/?(*.)+(spec|test).+(ts|tsx|js)'],
  transform: {
    // Transpile only: the suite's './types' imports point at source files that
    // are not here, so type-checking would fail on paths, not on code.
    '^.+\\.(ts|js|tsx)$': ['ts-jest', { isolatedModules: true }],
  },
  resolver: '<rootDir>/resolver.js',
};
