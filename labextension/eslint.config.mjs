// The JupyterLab extension template's lint rules (eslint 9 flat config), applied to the
// sources and to the node tests of the pure logic. Two of the template's rules are left out
// because they never ran there: prettierRecommended turns them off. `@typescript-eslint/quotes`
// (typescript-eslint 8 has no such rule; prettier's singleQuote keeps quotes) and
// `prefer-arrow-callback` (its fixes fight the prettier plugin's).
import js from '@eslint/js';
import jupyterPlugin from '@jupyter/eslint-plugin';
import prettierRecommended from 'eslint-plugin-prettier/recommended';
import { defineConfig } from 'eslint/config';
import globals from 'globals';
import tseslint from 'typescript-eslint';

export default defineConfig([
  {
    ignores: ['node_modules', 'lib', 'lib-test', '**/*.js', '**/*.d.ts']
  },
  js.configs.recommended,
  tseslint.configs.recommended,
  {
    plugins: {
      jupyter: jupyterPlugin
    }
  },
  jupyterPlugin.configs.recommended,
  {
    files: ['**/*.ts', '**/*.tsx'],
    languageOptions: {
      globals: {
        ...globals.browser,
        ...globals.es2015,
        ...globals.node
      },
      parserOptions: {
        project: ['tsconfig.json', 'tsconfig.test.json'],
        sourceType: 'module'
      }
    },
    rules: {
      '@typescript-eslint/naming-convention': [
        'error',
        {
          selector: 'interface',
          format: ['PascalCase'],
          custom: {
            regex: '^I[A-Z]',
            match: true
          }
        }
      ],
      '@typescript-eslint/no-unused-vars': ['warn', { args: 'none' }],
      '@typescript-eslint/no-explicit-any': 'off',
      '@typescript-eslint/no-namespace': 'off',
      '@typescript-eslint/no-use-before-define': 'off',
      eqeqeq: 'error',
      // The sidebar is English only and takes no ITranslator; this goes back on together
      // with translations.
      'jupyter/no-untranslated-string': 'off'
    }
  },
  {
    // activate() adds the panel to the shell and starts the poll at once, and the panel
    // imports every other module: a lazy import here would defer nothing.
    files: ['src/index.ts'],
    rules: { 'jupyter/prefer-lazy-imports': 'off' }
  },
  prettierRecommended,
  {
    // After prettierRecommended, which turns `curly` off too; 'all' cannot clash with prettier.
    files: ['**/*.ts', '**/*.tsx'],
    rules: { curly: ['error', 'all'] }
  }
]);
