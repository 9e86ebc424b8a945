/** The shape every CLI subcommand has, so main and `--help` can list and dispatch them. */
import type { Console } from './output.js';

export interface Subcommand {
  /** The word after the group ("create" in "strata img create"). */
  readonly name: string;
  /** One line for the group's help listing. */
  readonly summary: string;
  /** The full text for "strata img <name> --help", ending with a newline. */
  readonly help: string;
  /** Runs the subcommand with the arguments after its name; resolves to the exit status. */
  run(argv: string[], con: Console): Promise<number>;
  /** True for a subcommand with subcommands of its own ("group snap create"): it answers --help itself. */
  readonly answersHelp?: boolean;
}
