import { LocalCoordinator } from '../../src/volume/coordinator-local.js';
import { coordinatorConformance } from './coordinator.js';

coordinatorConformance('in-process', async () => new LocalCoordinator());
