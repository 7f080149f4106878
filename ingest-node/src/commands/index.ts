// The consumer-side subcommands, for cli.ts to append to its `commands` list.
import { commitsCommand } from './commits.ts';
import { expandCommand } from './expand.ts';
import { verifyCommand } from './verify.ts';

export { commitsCommand, expandCommand, verifyCommand };
export type { Command, CommandIo } from './common.ts';

export const deliveryCommands = [expandCommand, verifyCommand, commitsCommand] as const;
