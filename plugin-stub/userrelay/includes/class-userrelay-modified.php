<?php
/**
 * When a user's data here last changed: the usermeta userrelay_modified (microtime), set
 * whenever a change of the user is reported or a delivery applied to them; a user without it
 * last changed when they registered.
 *
 * The users route, digests and the implied versions of a never-stamped user read it; an
 * initial-sync delivery older than it is not applied. Writing it is bookkeeping (protected by
 * its userrelay prefix, written with reporting off): never a change to report.
 *
 * @package UserRelay
 */

if ( ! defined( 'ABSPATH' ) ) {
	exit;
}

/**
 * A user's last-change time.
 */
final class UserRelay_Modified {

	/** The usermeta holding when a user's data last changed (microtime, see of()). */
	const META = 'userrelay_modified';

	/**
	 * When the user's data here last changed: the usermeta userrelay_modified, else when the
	 * user registered.
	 *
	 * @param WP_User $user The user.
	 * @return float Unix seconds.
	 */
	public static function of( WP_User $user ): float {
		$stored = get_user_meta( $user->ID, self::META, true );
		if ( is_numeric( $stored ) ) {
			return (float) $stored;
		}
		$registered = strtotime( (string) $user->user_registered . ' UTC' );
		return false === $registered ? 0.0 : (float) $registered;
	}

	/**
	 * Records when the user's data last changed (no meta hook runs: it is bookkeeping).
	 *
	 * @param int   $user_id User id.
	 * @param float $at      Unix seconds.
	 */
	public static function record( int $user_id, float $at ): void {
		UserRelay_Bookkeeping_Meta::write( $user_id, self::META, sprintf( '%.6F', $at ) );
	}
}
